"""Key hierarchy and versions (metadata only), the Vault keystore, diversification, rotation."""
