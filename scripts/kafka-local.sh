#!/usr/bin/env bash
# Run a throwaway single-node Apache Kafka (KRaft) from the Maven Central jars.
#
# Why: tests need a real broker, and CI machines may have no Docker engine. Java and Maven are
# enough: `fetch` resolves the broker jars once into a cache, `start` runs a broker bound to
# 127.0.0.1 only, `stop` shuts it down. See README.md, "Tests".
#
#   kafka-local.sh fetch                      print the cached libs dir (downloading if needed)
#   kafka-local.sh start DIR [PORT] [k=v ...] start a broker with state in DIR; prints host:port
#   kafka-local.sh stop DIR                   stop it (SIGTERM, wait, then SIGKILL)
#
# Environment: KAFKA_VERSION (default below), INTERLOCK_CACHE (default ~/.cache/interlock),
# KAFKA_HEAP_OPTS (default -Xms256m -Xmx512m), INTERLOCK_KAFKA_START_TIMEOUT (seconds, 120),
# INTERLOCK_PYTHON (an interpreter with kafka-python, for the readiness probe),
# INTERLOCK_WATCH_PID (stop the broker when that process exits, so a killed test run
# leaves no orphan broker behind; with INTERLOCK_WATCH_REMOVE=1 also delete DIR then).
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
SCALA_VERSION="2.13"
# Kafka's POM leaves the logging backend out; slf4j-simple writes to stderr (our server log)
# and needs no config file. Kafka 3.x/4.x still log through the SLF4J 1.7 API.
SLF4J_VERSION="1.7.36"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
CACHE_ROOT="${INTERLOCK_CACHE:-$HOME/.cache/interlock}"
KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
REPO_ROOT="$(cd "$(dirname "$SCRIPT")/.." && pwd)"

die() { echo "kafka-local: $*" >&2; exit 1; }
log() { echo "kafka-local: $*" >&2; }

usage() {
    # The header comment is the manual.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT" >&2
    exit 2
}

# A python interpreter: the caller's (it has kafka-python), else the repo venv, else python3.
pick_python() {
    local p
    for p in "${INTERLOCK_PYTHON:-}" "$REPO_ROOT/.venv/bin/python" python3; do
        [[ -n "$p" ]] && command -v "$p" >/dev/null 2>&1 && { echo "$p"; return 0; }
    done
    return 1
}

# Print a TCP port that is free on 127.0.0.1 (the kernel picks it; tiny race, retried by callers).
free_port() {
    local py p
    if py="$(pick_python)"; then
        "$py" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    for _ in $(seq 50); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port found"
}

cmd_fetch() {
    if [[ -f "$KAFKA_HOME/.complete" ]]; then
        echo "$LIBS"
        return
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (apt-get install -y maven)"
    mkdir -p "$CACHE_ROOT"
    # Serialise concurrent fetches (parallel test workers) on one lock.
    exec 9>"$CACHE_ROOT/.kafka-$KAFKA_VERSION.lock"
    flock 9
    if [[ -f "$KAFKA_HOME/.complete" ]]; then
        echo "$LIBS"
        return
    fi
    local work
    work="$(mktemp -d "$CACHE_ROOT/.kafka-fetch.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    cat >"$work/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.interlock</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_VERSION}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
POM
    log "resolving org.apache.kafka:kafka_${SCALA_VERSION}:${KAFKA_VERSION} from Maven Central"
    if ! mvn -B -q -U -Dstyle.color=never -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
            -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
        sed -e $'s/\e\\[[0-9;]*m//g' "$work/mvn.log" \
            | grep -viE '^\[ERROR\] *$|re-run Maven|For more information|^\[ERROR\] \[Help 1\]' \
            | tail -n 20 >&2
        die "mvn could not resolve kafka_${SCALA_VERSION}:${KAFKA_VERSION} (log above)"
    fi
    compgen -G "$work/libs/kafka_${SCALA_VERSION}-*.jar" >/dev/null \
        || die "mvn finished but no kafka_${SCALA_VERSION} jar was copied"
    rm -rf "$KAFKA_HOME"
    mkdir -p "$KAFKA_HOME"
    mv "$work/libs" "$LIBS"
    touch "$KAFKA_HOME/.complete"
    log "cached $(find "$LIBS" -name '*.jar' | wc -l) jars in $LIBS"
    echo "$LIBS"
}

# True while PID is a live process (a zombie awaiting its reaper counts as gone).
alive() {
    [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ "$state" != Z ]]
}

# Print the last lines of the server log, for error messages.
log_tail() {
    local f="$1/server.log"
    [[ -f "$f" ]] || return 0
    {
        # The cause usually comes first; the tail is often just shutdown noise.
        echo "--- first errors in $f ---"
        grep -m 5 -E " (ERROR|FATAL) |Exception" "$f" || echo "(none)"
        echo "--- last lines of $f ---"
        tail -n 25 "$f"
    } >&2
}

is_running() {
    local pid
    [[ -f "$1/kafka.pid" ]] || return 1
    pid="$(cat "$1/kafka.pid")"
    [[ -n "$pid" ]] && alive "$pid"
}

# Succeeds once the broker answers a metadata request on 127.0.0.1:$1.
probe() {
    local port="$1" py
    # Cheap check first: the broker listener accepts connections only once it is nearly ready,
    # and spawning a Python client every poll would slow a JVM starting on a busy machine.
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
    if py="$(pick_python)" && "$py" -c 'import kafka' 2>/dev/null; then
        timeout 20 "$py" - "$port" >"$DIR/probe.log" 2>&1 <<'PY'
import logging, sys
from kafka import KafkaAdminClient
logging.disable(logging.CRITICAL)
admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=5000)
try:
    admin.list_topics()
    brokers = admin.describe_cluster().get("brokers") or []
    sys.exit(0 if brokers else 1)
finally:
    admin.close()
PY
        return
    fi
    # No kafka-python: the port is open and the server logged that it started.
    grep -q "Kafka Server started" "$DIR/server.log" 2>/dev/null
}

cmd_start() {
    DIR="${1:-}"
    [[ -n "$DIR" ]] || usage
    local port="${2:-0}"
    shift $(( $# >= 2 ? 2 : 1 ))
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    command -v java >/dev/null 2>&1 || die "java not found: install a JRE 17+ (apt-get install -y openjdk-17-jre-headless)"
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd)"
    local started=$SECONDS
    if is_running "$DIR"; then
        die "a broker is already running from $DIR (pid $(cat "$DIR/kafka.pid"))"
    fi
    local libs
    libs="$(cmd_fetch)"
    [[ "$port" == 0 ]] && port="$(free_port)"
    local cport
    cport="$(free_port)"
    while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done

    local major minor quorum_line standalone=()
    major="${KAFKA_VERSION%%.*}"
    minor="${KAFKA_VERSION#*.}"; minor="${minor%%.*}"
    if (( major > 3 || (major == 3 && minor >= 9) )); then
        # KIP-853 dynamic quorum: the formatter seeds this node as the only voter.
        quorum_line="controller.quorum.bootstrap.servers=127.0.0.1:$cport"
        standalone=(--standalone)
    else
        quorum_line="controller.quorum.voters=1@127.0.0.1:$cport"
    fi

    rm -rf "$DIR/data"
    mkdir -p "$DIR/data"
    cat >"$DIR/server.properties" <<PROPS
# Written by scripts/kafka-local.sh: a throwaway single-node KRaft broker for tests.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
$quorum_line
log.dirs=$DIR/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
PROPS
    # Extra key=value arguments override or extend the config.
    local kv
    for kv in "$@"; do
        [[ "$kv" == *=* ]] || die "expected key=value, got '$kv'"
        echo "$kv" >>"$DIR/server.properties"
    done

    local heap
    read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
    local jvm=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
               -Dorg.slf4j.simpleLogger.defaultLogLevel=info
               -Dorg.slf4j.simpleLogger.showDateTime=true
               -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS
               -Dkafka.logs.dir="$DIR/logs"
               -cp "$libs/*")
    local cluster_id
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    if ! "${jvm[@]}" kafka.tools.StorageTool format "${standalone[@]}" -t "$cluster_id" \
            -c "$DIR/server.properties" >"$DIR/format.log" 2>&1; then
        cat "$DIR/format.log" >&2
        die "formatting KRaft storage in $DIR/data failed (output above)"
    fi

    local timeout_s="${INTERLOCK_KAFKA_START_TIMEOUT:-120}"
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$port (controller $cport), state in $DIR"
    # setsid: the broker must not get the test runner's terminal signals before we stop it.
    setsid "${jvm[@]}" kafka.Kafka "$DIR/server.properties" \
        </dev/null >"$DIR/server.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$DIR/kafka.pid"
    echo "$port" >"$DIR/port"

    local deadline=$(( SECONDS + timeout_s ))
    until probe "$port"; do
        if ! alive "$pid"; then
            log_tail "$DIR"
            rm -f "$DIR/kafka.pid"
            die "the broker exited during startup (port $port)"
        fi
        if (( SECONDS >= deadline )); then
            log_tail "$DIR"
            [[ -s "$DIR/probe.log" ]] && { echo "--- last probe output ---"; tail -n 5 "$DIR/probe.log"; } >&2
            cmd_stop "$DIR" || true
            die "the broker did not serve metadata on 127.0.0.1:$port within ${timeout_s}s"
        fi
        sleep 0.5
    done

    if [[ -n "${INTERLOCK_WATCH_PID:-}" ]]; then
        # Stop the broker when the watched process (the test run) goes away.
        # shellcheck disable=SC2016  # $1.. are the inner script's arguments
        setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -f "$2/kafka.pid" ]]; do sleep 2; done
                        if [[ -f "$2/kafka.pid" ]]; then "$3" stop "$2"; [[ "$4" != 1 ]] || rm -rf "$2"; fi' \
            watch "$INTERLOCK_WATCH_PID" "$DIR" "$SCRIPT" "${INTERLOCK_WATCH_REMOVE:-0}" \
            </dev/null >/dev/null 2>&1 &
    fi
    log "ready after $(( SECONDS - started ))s (pid $pid)"
    echo "127.0.0.1:$port"
}

cmd_stop() {
    local dir="${1:-}"
    [[ -n "$dir" ]] || usage
    [[ -f "$dir/kafka.pid" ]] || { log "no broker pid file in $dir"; return 0; }
    dir="$(cd "$dir" && pwd)"
    local pid
    pid="$(cat "$dir/kafka.pid")"
    # Only signal the pid if it is still our broker (pids get reused).
    if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
            | grep -qF "kafka.Kafka $dir/server.properties"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 150); do
            alive "$pid" || break
            sleep 0.2
        done
        if alive "$pid"; then
            log "broker $pid ignored SIGTERM for 30s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$dir/kafka.pid"
}

case "${1:-}" in
    fetch) shift; cmd_fetch "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
