"""Host side of MIFARE DESFire EV1/EV2/EV3: wrapped native commands with EV1/EV2 secure messaging."""
from .constants import AccessRights, AuthMode, Cmd, CommMode, FileType, KeySettings, KeyType
from .files import FileSettings
from .session import DESFire, KeySettingsInfo, Version

__all__ = [
    "DESFire", "CommMode", "FileType", "KeyType", "AccessRights", "AuthMode", "Cmd", "KeySettings",
    "FileSettings", "KeySettingsInfo", "Version",
]
