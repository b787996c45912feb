#!/usr/bin/env python3
"""Make sure a blob container exists in a local Azurite emulator.

object_store reads and writes blobs but cannot create containers, so the
Azure backend tests need the container made first. This sends one
"Create Container" request (PUT ?restype=container), signed with the
SharedKey scheme of Azure Storage and Azurite's published development
account. Standard library only.

Usage: azurite-container.py CONTAINER [ENDPOINT]
ENDPOINT defaults to http://127.0.0.1:10000. Exits 0 when the container
was created or was already there.
"""
import base64
import email.utils
import hashlib
import hmac
import sys
import urllib.error
import urllib.request

# Azurite's fixed development account (documented by the emulator).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY_B64 = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
API_VERSION = "2021-08-06"


def string_to_sign(container: str, when: str) -> str:
    # Verb, then eleven standard headers in the order SharedKey fixes
    # (all empty here but Content-Type; a zero Content-Length is signed
    # as empty), then the x-ms-* headers, then the canonical resource.
    standard = ["PUT", "", "", "", "", "application/octet-stream", "", "", "", "", "", ""]
    ms_headers = [f"x-ms-date:{when}", f"x-ms-version:{API_VERSION}"]
    resource = f"/{DEV_ACCOUNT}/{DEV_ACCOUNT}/{container}\nrestype:container"
    return "\n".join(standard + ms_headers + [resource])


def create(container: str, endpoint: str) -> None:
    when = email.utils.formatdate(usegmt=True)
    mac = hmac.new(base64.b64decode(DEV_KEY_B64), string_to_sign(container, when).encode(), hashlib.sha256)
    headers = {
        "x-ms-date": when,
        "x-ms-version": API_VERSION,
        "Content-Type": "application/octet-stream",
        "Content-Length": "0",
        "Authorization": f"SharedKey {DEV_ACCOUNT}:{base64.b64encode(mac.digest()).decode()}",
    }
    url = f"{endpoint.rstrip('/')}/{DEV_ACCOUNT}/{container}?restype=container"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="PUT", data=b"", headers=headers))
    except urllib.error.HTTPError as e:
        if e.code != 409:  # 409 Conflict: the container exists
            sys.exit(f"creating container {container} at {endpoint}: HTTP {e.code}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    create(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:10000")
