#!/usr/bin/env bash
# Fetch the third-party captures some tests need into ../shared/fixtures (or $1), from their
# upstream repositories at pinned commits, each checked against its sha256. Needs internet
# access and curl. Without them those tests are skipped (#[ignore] with the reason); .ci/run runs
# them whenever ../shared/fixtures is present.
#
#   bash tests/fetch_fixtures.sh [target-dir]
#
# as2/: captures of Mendelson AS2 and IBM Sterling B2B Integrator messages, MDNs, keys and
#   payloads published in pyas2-lib's test suite (GPL-3.0: kept outside this repository).
# as4/: a WS-Security signed ebMS3 PullRequest from the AS4.NET (eessi-as4.net) unit tests,
#   stored here without its UTF-8 byte order mark.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-../shared/fixtures}"

PYAS2LIB="https://raw.githubusercontent.com/abhishek-ram/pyas2-lib/ed5a55170e6a9acb00461d101e12ebd77bdd3270/pyas2lib/tests/fixtures"
AS4NET="https://raw.githubusercontent.com/thomsonreuters/eessi-as4.net/36ebad055b5f02af40d472fed97d84b37e12eeac/source/Eu.EDelivery.AS4.UnitTests/Resources"

# sha256, file name in as2/ (same name upstream)
AS2_FILES="
7f51eaf93310c5baba16bfdecbed445dd929cd2d48ae6e33b6e1f6295b5aaabd cert_mecas2_public.pem
c0716eae91ca501a309263861d0182ec444fb965a1054f82393058770f7075d7 cert_oldpyas2_private.pem
36d3bcf663c2ac63a3af390ae33b1f965fddc12d3fd5df2c3d3b500c1f4027e2 cert_oldpyas2_public.pem
d2c70333c398f5d7255f3d8b4dc1412296f0a3bcd9bfc70dacd53db6c89e01b0 cert_sb2bi_public.ca
0f1a8f7633c4f50dcbc539d68ae40b321ff40edda0ec47738ba79855bf3cba26 cert_sb2bi_public.pem
772bed2ec749faa1845dfb6e7e6a57272ed2d5556ef4167f6d25d5cd2b3f3779 cert_test.pem
9b339fc1b01eff9b7fdd1a68b347acf54599352d95a6a7d06e76e884af664a8f cert_test_public.pem
912851104dd34cdd667655b2d4eaf5faddc10b41de84f736644eecdd87281ff5 mecas2_compressed.as2
aa4a1de4a282645a28a2d0ac813e264045b22022b4be6b9d910c6f9bfe7daad6 mecas2_compressed_signed_encrypted.as2
270b73909fdc8ac308b485ee8ca8f2e7a9117dfee1bdb41ef664860cd98ca77e mecas2_encrypted.as2
8cf30334c604b109e9fc04eccdf9b352b31b628946aa41d1e27858cb0f54bdfd mecas2_signed.as2
9a4545e6013567c12277977de5aec07e4a0f5d4bcd14301e3390987c5f8b66d1 mecas2_signed.mdn
67b077ef932cf63f4d9df8cc757a7406003e2df6fc82f62b1e3e1fa0f039e325 mecas2_signed_encrypted.as2
c47c7e16390f32311b75f1265d0ea3ff89d21e78fb18252c5cd17fbd6d0ef14b mecas2_unsigned.mdn
238dfd6a758e29a0efead52067023d9afd913a45069f33ddeb8f1224777c01a9 payload.binary
359d17b5134ed254e575084acbd73e0e4dbb088b2e8595fe046984d9c57ac509 payload.txt
a150e99eb4a7a6af95f7d75769aad0f4717245468536ca7db5d0414a64615f8b payload_dos.txt
145e79ae4104eb10adc37341ba9a54cfd7373ac27f061b0f2037ab528151aea3 sb2bi_signed.mdn
1034338b0308a1bb817e9a7dda7bc7ecb3179c218e11210f475498859264a660 sb2bi_signed_cmp.msg
"
# The AS4 capture: sha256 as published (with BOM), then as stored (BOM removed).
AS4_UPSTREAM="as4-soap-signed-pullrequest.xml"
AS4_UPSTREAM_SHA256="ce8d27a6c6019b0c859a788c3795260c51fc17c4bc821ef93b2a81eb24420d22"
AS4_FILE="as4net_signed_pullrequest.xml"
AS4_SHA256="176250440f11739007e75d470c7fbf876693a55ec238de3fa70cfeb1a389e498"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

check() { # sha256 file
  local got
  got="$(sha256sum "$2" | cut -d' ' -f1)"
  if [ "$got" != "$1" ]; then
    echo "fetch_fixtures: $2: sha256 $got, expected $1" >&2
    exit 1
  fi
}

mkdir -p "$tmp/as2" "$tmp/as4"
echo "$AS2_FILES" | while read -r sha name; do
  [ -n "$name" ] || continue
  curl -fsSL --retry 3 -o "$tmp/as2/$name" "$PYAS2LIB/$name"
  check "$sha" "$tmp/as2/$name"
done
curl -fsSL --retry 3 -o "$tmp/$AS4_UPSTREAM" "$AS4NET/$AS4_UPSTREAM"
check "$AS4_UPSTREAM_SHA256" "$tmp/$AS4_UPSTREAM"
sed '1s/^\xEF\xBB\xBF//' "$tmp/$AS4_UPSTREAM" > "$tmp/as4/$AS4_FILE"
check "$AS4_SHA256" "$tmp/as4/$AS4_FILE"

mkdir -p "$target/as2" "$target/as4"
cp "$tmp"/as2/* "$target/as2/"
cp "$tmp/as4/$AS4_FILE" "$target/as4/"
echo "fixtures in $target: $(ls "$target/as2" | wc -l) in as2/, $(ls "$target/as4" | wc -l) in as4/"
