# Real services on 127.0.0.1 for the service tier and the benches: sourced
# by .ci/run and benches/*.sh. Each start function installs what it needs
# when missing (Debian packages, crates.io, PyPI: inside the clone, under
# target/ci-tools, never in $HOME), starts one server in $SVC_WORK, exports
# the variables the tests read, and registers the server's PID so that
# `svc_stop_all` (run on exit) stops exactly what was started.
#
#   source .ci/services.sh
#   svc_init                 # a temporary folder; stops everything on exit
#   svc_postgres             # ZENFLOW_TEST_POSTGRES_URL, ..._TLS_URL, ..._CA, ..._OTHER_CA,
#                            # ZENFLOW_TEST_POSTGRES_CTL (crash/start the server)
#   svc_s3                   # ZENFLOW_TEST_S3_ENDPOINT, _BUCKET, _ACCESS_KEY, _SECRET_KEY
#   svc_ray                  # ZENFLOW_TEST_RAY_ADDRESS, ZENFLOW_TEST_RAY_CTL (stop/start the head)
#
# Start Ray last: its jobs inherit the head's environment, which is how
# workers get the store credentials the others exported.

SVC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SVC_TOOLS="$SVC_ROOT/target/ci-tools"
SVC_PIDS=()
SVC_PG_DATA=""
SVC_PG_BIN=""

svc_init() {
    SVC_WORK=$(mktemp -d)
    chmod 755 "$SVC_WORK" # the postgres user must reach its data folder inside
    trap svc_stop_all EXIT
}

svc_stop_all() {
    if [ -n "$SVC_PG_DATA" ]; then
        runuser -u postgres -- "$SVC_PG_BIN/pg_ctl" -D "$SVC_PG_DATA" -m fast stop >/dev/null 2>&1 || true
        SVC_PG_DATA=""
    fi
    local pid
    for pid in "${SVC_PIDS[@]}"; do
        # A process group where the server has children (Ray, MLServer).
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${SVC_PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    SVC_PIDS=()
    # The Ray head may have been restarted by a test: stop the one running now.
    if [ -n "${SVC_RAY_CTL:-}" ] && [ -x "$SVC_RAY_CTL" ]; then
        "$SVC_RAY_CTL" stop || true
        SVC_RAY_CTL=""
    fi
    [ -n "${SVC_WORK:-}" ] && rm -rf "$SVC_WORK"
}

# Waits up to 30 s for a TCP port on 127.0.0.1.
svc_wait_port() {
    local port=$1
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$port after 30 s" >&2
    return 1
}

# PostgreSQL from Debian's packages, password authentication over TCP, and
# TLS as managed databases serve it: a CA of this run signs a certificate
# for localhost; the role tls_only may connect over TLS only.
svc_postgres() {
    local port=${1:-55432}
    SVC_PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$SVC_PG_BIN" ] || [ ! -x "$SVC_PG_BIN/initdb" ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        SVC_PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    local pg="$SVC_WORK/pg"
    mkdir -p "$pg"
    chown postgres "$pg"
    # Local socket connections are trusted (to set the password); TCP ones need it.
    runuser -u postgres -- "$SVC_PG_BIN/initdb" -D "$pg/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    (
        cd "$pg"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=zenflow CI CA" \
            -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost\n' >san.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext \
            -out server.pem 2>/dev/null
        chown postgres server.key server.pem
        chmod 600 server.key
        # A CA that signed nothing the server holds: what an interceptor's
        # certificate looks like to a client that trusts it.
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=another CA" \
            -keyout other-ca.key -out other-ca.pem 2>/dev/null
    )
    {
        echo "hostnossl all tls_only 127.0.0.1/32 reject"
        echo "hostssl all tls_only 127.0.0.1/32 scram-sha-256"
        cat "$pg/data/pg_hba.conf"
    } >"$pg/hba" && mv "$pg/hba" "$pg/data/pg_hba.conf" && chown postgres "$pg/data/pg_hba.conf"
    SVC_PG_DATA="$pg/data"
    # `ctl stop` crashes the server as a power cut would (no shutdown
    # checkpoint, every session cut); `ctl start` brings it back as it was.
    cat >"$pg/ctl" <<EOF
#!/bin/sh
set -e
case "\$1" in
stop) exec runuser -u postgres -- "$SVC_PG_BIN/pg_ctl" -D "$SVC_PG_DATA" -m immediate stop >/dev/null ;;
start) exec runuser -u postgres -- "$SVC_PG_BIN/pg_ctl" -D "$SVC_PG_DATA" -l "$pg/log" -w -o "-c listen_addresses=127.0.0.1 -p $port -k $pg -c ssl=on -c ssl_cert_file=$pg/server.pem -c ssl_key_file=$pg/server.key" start >/dev/null ;;
*) echo "usage: \$0 stop|start" >&2; exit 2 ;;
esac
EOF
    chmod 755 "$pg/ctl"
    "$pg/ctl" start
    local password="pw-$RANDOM-$RANDOM"
    runuser -u postgres -- psql -q -h "$pg" -p "$port" -U postgres \
        -c "ALTER USER postgres PASSWORD '$password'" \
        -c "CREATE ROLE tls_only LOGIN CREATEDB PASSWORD '$password'" >/dev/null
    export ZENFLOW_TEST_POSTGRES_PASSWORD="$password"
    export ZENFLOW_TEST_POSTGRES_URL="postgres://postgres:$password@127.0.0.1:$port/postgres"
    export ZENFLOW_TEST_POSTGRES_TLS_URL="postgres://tls_only:$password@localhost:$port/postgres"
    export ZENFLOW_TEST_POSTGRES_CA="$pg/ca.pem"
    export ZENFLOW_TEST_POSTGRES_OTHER_CA="$pg/other-ca.pem"
    export ZENFLOW_TEST_POSTGRES_CTL="$pg/ctl"
    echo "PostgreSQL $("$SVC_PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

# s3s-fs from crates.io (it checks SigV4 signatures, so wrong credentials
# really fail), built once into target/ci-tools.
svc_s3() {
    local port=${1:-8014}
    local bin="$SVC_TOOLS/bin/s3s-fs"
    if [ ! -x "$bin" ]; then
        cargo install -q --locked s3s-fs --version 0.14.1 --features binary --root "$SVC_TOOLS" >/dev/null
    fi
    local key="zenflow-ci-$RANDOM"
    local secret="secret-$RANDOM-$RANDOM"
    mkdir -p "$SVC_WORK/s3/zenflow-test"
    setsid "$bin" --host 127.0.0.1 --port "$port" --access-key "$key" --secret-key "$secret" "$SVC_WORK/s3" \
        >"$SVC_WORK/s3.log" 2>&1 &
    SVC_PIDS+=($!)
    svc_wait_port "$port"
    export ZENFLOW_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
    export ZENFLOW_TEST_S3_BUCKET=zenflow-test
    export ZENFLOW_TEST_S3_ACCESS_KEY="$key"
    export ZENFLOW_TEST_S3_SECRET_KEY="$secret"
    echo "s3s-fs on 127.0.0.1:$port"
}

# A standard Open Inference Protocol client from PyPI (tritonclient[http],
# pinned) in a virtualenv under target/ci-tools, for the serving test that
# drives `serve` with it.
svc_oip_client() {
    local venv="$SVC_TOOLS/oip-client-venv"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import tritonclient.http' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check 'tritonclient[http]==2.73.0' >/dev/null
    fi
    export ZENFLOW_TEST_OIP_PYTHON="$venv/bin/python"
}

# A Ray head from PyPI (ray[default], pinned) in a virtualenv under
# target/ci-tools, bound to 127.0.0.1, with 2 CPUs. Its fixed ports follow
# the dashboard's (8265: GCS 6380, client 10001, agent 52365). The head is driven
# through a small control script (stop by PID, start again) that tests use
# to stop it mid-run; svc_stop_all stops whichever head runs at the end.
# Its fixed ports derive from the dashboard port (the GCS at port - 1885,
# Ray Client at port + 1736, the dashboard agent at port + 44100); workers
# take ports in [port + 2000, port + 9000], which holds none of them for any
# port (Ray's default range, 10002-19999, held Ray Client's for 8267).
svc_ray() {
    local port=${1:-8265}
    local venv="$SVC_TOOLS/ray-venv"
    if [ ! -x "$venv/bin/ray" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check 'ray[default]==2.60.0' >/dev/null
    fi
    local dir="$SVC_WORK/ray"
    mkdir -p "$dir"
    SVC_RAY_CTL="$SVC_WORK/ray-ctl"
    cat >"$SVC_RAY_CTL" <<CTL
#!/usr/bin/env bash
# stop | start: the Ray head of this CI run, by its PID.
set -euo pipefail
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
case "\$1" in
start)
    setsid "$venv/bin/ray" start --head --block --node-ip-address=127.0.0.1 --port=$((port - 1885)) \\
        --ray-client-server-port=$((port + 1736)) --dashboard-agent-listen-port=$((port + 44100)) \\
        --min-worker-port=$((port + 2000)) --max-worker-port=$((port + 9000)) \\
        --dashboard-host=127.0.0.1 --dashboard-port=$port --num-cpus=2 --include-dashboard=true \\
        --temp-dir="$dir" --disable-usage-stats >>"$dir/head.log" 2>&1 &
    echo \$! >"$dir/head.pid"
    for _ in \$(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/api/version" >/dev/null && exit 0
        sleep 0.1
    done
    echo "the Ray head did not answer on 127.0.0.1:$port within 60 s; see $dir/head.log" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/head.pid" ] || exit 0
    pid=\$(cat "$dir/head.pid")
    kill -TERM -- "-\$pid" 2>/dev/null || kill -TERM "\$pid" 2>/dev/null || true
    for _ in \$(seq 1 150); do
        kill -0 "\$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-\$pid" 2>/dev/null || true
    rm -f "$dir/head.pid"
    ;;
esac
CTL
    chmod +x "$SVC_RAY_CTL"
    "$SVC_RAY_CTL" start
    export ZENFLOW_TEST_RAY_ADDRESS="http://127.0.0.1:$port"
    export ZENFLOW_TEST_RAY_CTL="$SVC_RAY_CTL"
    # Every listening socket of the head on 127.0.0.1 only.
    if command -v ss >/dev/null; then
        local pids
        pids=$(pgrep -g "$(cat "$dir/head.pid")" | paste -sd'|' || true)
        if ss -ltnpH 2>/dev/null | grep -E "pid=($pids)," | awk '{print $4}' | grep -vE '^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]):' ; then
            echo "a Ray socket listens beyond 127.0.0.1 (above)" >&2
            return 1
        fi
    fi
    echo "Ray $("$venv/bin/ray" --version | awk '{print $3}') head on 127.0.0.1:$port"
}
