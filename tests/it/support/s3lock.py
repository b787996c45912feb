"""S3 requests the object-lock tests (tests/it/object_lock.rs) make from
outside strongroom, with boto3 (installed with moto): create a bucket
(with or without Object Lock), read every object's lock headers, and play
the attacker who holds full credentials.

Usage: s3lock.py ENDPOINT COMMAND BUCKET [ARG]
  create         bucket with Object Lock enabled
  create-plain   bucket without it
  locks          JSON: {key: {"mode", "until", "legal_hold"}} of current objects
  attack         deletes every object (plain delete) and then every version
                 and delete marker by id, as far as the server lets it;
                 JSON: {"deleted_versions", "refused_versions", "markers"}
  versions       JSON: [{key, version, marker, latest}] of every version
"""
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="strongroomtest",
        aws_secret_access_key="strongroomtestsecret",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def versions(s3, bucket):
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            out.append({"key": v["Key"], "version": v["VersionId"], "marker": False, "latest": v["IsLatest"]})
        for m in page.get("DeleteMarkers", []):
            out.append({"key": m["Key"], "version": m["VersionId"], "marker": True, "latest": m["IsLatest"]})
    return out


def main():
    endpoint, cmd, bucket = sys.argv[1:4]
    s3 = client(endpoint)
    if cmd == "create":
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    elif cmd == "create-plain":
        s3.create_bucket(Bucket=bucket)
    elif cmd == "locks":
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                h = s3.head_object(Bucket=bucket, Key=o["Key"])
                until = h.get("ObjectLockRetainUntilDate")
                out[o["Key"]] = {
                    "mode": h.get("ObjectLockMode"),
                    "until": int(until.timestamp()) if until else None,
                    "legal_hold": h.get("ObjectLockLegalHoldStatus") == "ON",
                }
        print(json.dumps(out))
    elif cmd == "attack":
        keys = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.update(o["Key"] for o in page.get("Contents", []))
        for k in sorted(keys):
            s3.delete_object(Bucket=bucket, Key=k)
        deleted = refused = markers = 0
        for v in versions(s3, bucket):
            try:
                s3.delete_object(Bucket=bucket, Key=v["key"], VersionId=v["version"])
                if v["marker"]:
                    markers += 1
                else:
                    deleted += 1
            except ClientError as e:
                if e.response["Error"]["Code"] != "AccessDenied":
                    raise
                refused += 1
        # The attacker deletes once more: whatever survived is hidden again.
        for k in sorted(keys):
            s3.delete_object(Bucket=bucket, Key=k)
        print(json.dumps({"deleted_versions": deleted, "refused_versions": refused, "markers": markers}))
    elif cmd == "versions":
        print(json.dumps(versions(s3, bucket)))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
