# OpenBao for the docker-compose stack. For real production use Raft storage with TLS and several
# nodes (Vault HA); this file keeps the compose stack self-contained.
storage "file" {
  path = "/openbao/file"
}

listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true   # terminate TLS in front of it, or configure tls_cert_file/tls_key_file
}

audit "file" "cms" {
  options {
    file_path = "/openbao/file/audit.log"
  }
}

api_addr      = "http://vault:8200"
disable_mlock = true
ui            = false
