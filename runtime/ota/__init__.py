"""Over-the-air updates: the channel's formats (``channel``), its key chain (``keychain``),
bounded downloads (``fetch``) and the update pass (``updater``).

No names are re-exported here: the store needs ``keychain`` (cryptography) without the
downloader (urllib, ssl), and a server that polls no channel needs neither.
"""
