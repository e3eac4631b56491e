#!/usr/bin/env python3
"""Print IAM authentication tokens made by botocore at fixed credentials and times.

The output is Tests/AWSTests/Vectors/botocore-tokens.json: the tests check that
CacheAsideAWS's RDSAuthTokenGenerator and ElastiCacheAuthTokenGenerator produce exactly
these strings from the same inputs. Regenerate with

    python3 scripts/aws-token-vectors.py > Tests/AWSTests/Vectors/botocore-tokens.json

Needs botocore (pip install botocore, or boto3). Makes no network call: tokens are signed
locally, and the credentials below are made up.

- RDS: botocore's RDS client `generate_db_auth_token(DBHostname, Port, DBUsername, Region)`.
- ElastiCache: botocore's SigV4 query presigner (`RequestSigner.generate_presigned_url`,
  service `elasticache`, operation `connect`, 900 s) over
  `https://CACHE/?Action=connect&User=USER[&ResourceType=ServerlessCache]`, with the
  scheme removed, as AWS documents for Python clients.
"""

import datetime
import json
import os
import sys
import urllib.parse

# Nothing from this machine's AWS configuration may reach the signer.
for name in list(os.environ):
    if name.startswith("AWS_"):
        del os.environ[name]
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import botocore  # noqa: E402
import botocore.auth  # noqa: E402
import botocore.session  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.model import ServiceId  # noqa: E402
from botocore.signers import RequestSigner  # noqa: E402

CREDENTIALS = {
    "long-term": {
        "accessKeyID": "AKIDEXAMPLE",
        "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "sessionToken": None,
    },
    "temporary": {
        "accessKeyID": "ASIAEXAMPLETEMPORARY",
        "secretAccessKey": "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        "sessionToken": "IQoJb3JpZ2luX2VjEXAMPLE/session+token==",
    },
}

RDS_CASES = [
    # name, credentials, time, host, port, user, region
    ("rds-postgres", "long-term", "2024-01-02T03:04:05Z",
     "mydb.cluster-abcdefghijkl.us-east-1.rds.amazonaws.com", 5432, "app_user", "us-east-1"),
    ("rds-postgres-temporary-credentials", "temporary", "2024-01-02T03:04:05Z",
     "mydb.cluster-abcdefghijkl.us-east-1.rds.amazonaws.com", 5432, "app_user", "us-east-1"),
    ("rds-upper-case-host-and-user-to-encode", "temporary", "2024-02-29T23:59:59Z",
     "MyDB.Instance-1.eu-west-1.rds.amazonaws.com", 3306, "app user@example/a+b", "eu-west-1"),
    ("rds-port-443", "long-term", "2015-08-30T12:36:00Z",
     "proxy.proxy-abcdefghijkl.ap-southeast-2.rds.amazonaws.com", 443, "iam_reader", "ap-southeast-2"),
]

ELASTICACHE_CASES = [
    # name, credentials, time, cache name, serverless, user, region
    ("elasticache-replication-group", "long-term", "2024-01-02T03:04:05Z",
     "my-redis-group", False, "iam-user-01", "us-west-2"),
    ("elasticache-replication-group-temporary-credentials", "temporary", "2024-01-02T03:04:05Z",
     "my-redis-group", False, "iam-user-01", "us-west-2"),
    ("elasticache-serverless", "temporary", "2024-02-29T23:59:59Z",
     "my-serverless-cache", True, "iam-user-01", "eu-central-1"),
    ("elasticache-user-to-encode", "long-term", "2015-08-30T12:36:00Z",
     "cache-7", False, "app user+1", "us-east-1"),
]


def at(timestamp):
    """Make botocore sign at `timestamp` (it asks get_current_datetime for a naive UTC time)."""
    fixed = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")
    botocore.auth.get_current_datetime = lambda *args, **kwargs: fixed


def rds_token(credentials, host, port, user, region):
    session = botocore.session.Session()
    client = session.create_client(
        "rds",
        region_name=region,
        aws_access_key_id=credentials["accessKeyID"],
        aws_secret_access_key=credentials["secretAccessKey"],
        aws_session_token=credentials["sessionToken"],
    )
    return client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user, Region=region)


def elasticache_token(credentials, cache_name, serverless, user, region):
    session = botocore.session.Session()
    signer = RequestSigner(
        ServiceId("elasticache"),
        region,
        "elasticache",
        "v4",
        Credentials(credentials["accessKeyID"], credentials["secretAccessKey"], credentials["sessionToken"]),
        session.get_component("event_emitter"),
    )
    query = {"Action": "connect", "User": user}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    url = urllib.parse.urlunparse(("https", cache_name, "/", "", urllib.parse.urlencode(query), ""))
    signed = signer.generate_presigned_url(
        {"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
        operation_name="connect",
        expires_in=900,
        region_name=region,
    )
    prefix = "https://"
    assert signed.startswith(prefix), signed
    return signed[len(prefix):]


def main():
    cases = []
    for name, creds, timestamp, host, port, user, region in RDS_CASES:
        at(timestamp)
        cases.append({
            "name": name, "kind": "rds", "credentials": creds, "timestamp": timestamp,
            "hostname": host, "port": port, "user": user, "region": region,
            "token": rds_token(CREDENTIALS[creds], host, port, user, region),
        })
    for name, creds, timestamp, cache_name, serverless, user, region in ELASTICACHE_CASES:
        at(timestamp)
        cases.append({
            "name": name, "kind": "elasticache-serverless" if serverless else "elasticache-replication-group",
            "credentials": creds, "timestamp": timestamp, "cache": cache_name, "user": user,
            "region": region,
            "token": elasticache_token(CREDENTIALS[creds], cache_name, serverless, user, region),
        })
    json.dump(
        {
            "about": "IAM authentication tokens signed by botocore %s at fixed inputs; "
                     "printed by scripts/aws-token-vectors.py." % botocore.__version__,
            "credentials": CREDENTIALS,
            "cases": cases,
        },
        sys.stdout, indent=2, ensure_ascii=False,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
