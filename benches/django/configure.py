"""Prepares one run of the django-pyas2 baseline: creates the sqlite schema, then the
organization (the receiving station) and the partner (the bench's sender) from PEM files.

Usage (DJANGO_SETTINGS_MODULE=benchsite, BENCH_DJANGO_DIR set, benches/django on PYTHONPATH):
    python configure.py ORG_AS2_NAME ORG_KEY_PEM ORG_CERT_PEM PARTNER_AS2_NAME PARTNER_CERT_PEM
Prints "configured" when done.
"""

import sys

import django


def main(org_name, org_key, org_cert, partner_name, partner_cert):
    django.setup()
    from django.core.management import call_command
    from pyas2.models import Organization, Partner, PrivateKey, PublicCertificate

    call_command("migrate", verbosity=0, interactive=False)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    # pyas2 keeps a private key together with its certificate (PEM key + PEM cert) and a
    # password; the bench's keys are unencrypted, the password is not used.
    key = PrivateKey.objects.create(name=org_name, key=read(org_key) + read(org_cert), key_pass="unused")
    Organization.objects.create(name=org_name, as2_name=org_name, encryption_key=key, signature_key=key)
    # The partner's certificate is self-signed: pyas2lib accepts it as its own trust anchor.
    cert = PublicCertificate.objects.create(name=partner_name, certificate=read(partner_cert))
    Partner.objects.create(
        name=partner_name,
        as2_name=partner_name,
        target_url="http://127.0.0.1:9/unused",
        content_type="application/EDI-X12",
        signature="sha256",
        signature_cert=cert,
        encryption="aes_256_cbc",
        encryption_cert=cert,
        mdn=True,
        mdn_mode="SYNC",
        mdn_sign="sha256",
    )
    print("configured", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:])
