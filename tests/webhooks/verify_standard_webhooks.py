"""Checks the outbox's webhook signatures with the Standard Webhooks
reference library for Python (`standardwebhooks` on PyPI), independent of
the engine's own HMAC code.

Usage: python3 verify_standard_webhooks.py SECRET RECORDS.json
RECORDS.json: [{"id", "timestamp", "signature", "body"}], as the test's
receiver got them. Each must verify; each with one byte of its body changed,
or with another id, must not. Prints "verified N" and exits 0, else names the
first failure and exits 1.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    secret, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as file:
        records = json.load(file)
    webhook = Webhook(secret)
    for index, record in enumerate(records):
        headers = {
            "webhook-id": record["id"],
            "webhook-timestamp": record["timestamp"],
            "webhook-signature": record["signature"],
        }
        body = record["body"]
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError as error:
            print(f"record {index} ({record['id']}) does not verify: {error}")
            return 1
        tampered = body.replace('"type"', '"typo"', 1)
        for changed_body, changed_headers in [
            (tampered, headers),
            (body, dict(headers, **{"webhook-id": record["id"] + "x"})),
        ]:
            try:
                webhook.verify(changed_body, changed_headers)
            except WebhookVerificationError:
                continue
            print(f"record {index} ({record['id']}) verifies with a changed body or id")
            return 1
    print(f"verified {len(records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
