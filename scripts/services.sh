# shellcheck shell=bash
# Finds RabbitMQ and PostgreSQL where AMQP_URL and DATABASE_URL name them (and, when they are set, the
# tests' TEST_AMQP_URL and TEST_DATABASE_URL), by default 127.0.0.1:5672 and 127.0.0.1:5432. A server that
# does not answer is started only when its URL names this machine on the standard port: with Docker
# Compose where a Docker engine runs (only the missing service), otherwise from the distribution's
# packages (installing them with apt-get if needed). A server elsewhere is never started, only reported.
# Sourced by scripts/start, scripts/test and the other scripts.

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

DEFAULT_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
DEFAULT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/messages

# Is something listening on host:port? Bounded, for a host that drops packets rather than refusing.
# shellcheck disable=SC2016 # expanded by the inner shell
port_open() { timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

wait_port() {
  local name=$1 host=$2 port=$3 deadline=$((SECONDS + 90))
  until port_open "$host" "$port"; do
    [ $SECONDS -lt $deadline ] || die "$name did not come up on $host:$port within 90 s"
    sleep 1
  done
}

# "host port" of an amqp(s):// or postgres(ql):// URL, with the scheme's port when the URL names none.
# Credentials, path and query are dropped; of a PostgreSQL URL naming several hosts, the first is taken.
url_endpoint() {
  local scheme=${1%%://*} authority=${1#*://} host port=""
  authority=${authority%%[/?#]*}
  authority=${authority##*@}
  authority=${authority%%,*}
  if [[ $authority == \[* ]]; then
    host=${authority%%]*} && host=${host#\[}
    port=${authority#*]} && port=${port#:}
  else
    host=${authority%%:*}
    if [[ $authority == *:* ]]; then port=${authority##*:}; fi
  fi
  if [ -z "$port" ]; then
    case $scheme in amqps) port=5671 ;; amqp) port=5672 ;; *) port=5432 ;; esac
  fi
  echo "${host:-localhost} $port"
}

# Does $1 name this machine (loopback, its host name, or one of its addresses)?
is_local_host() {
  case $1 in localhost | localhost.localdomain | 127.* | ::1 | 0.0.0.0) return 0 ;; esac
  local name
  for name in $(hostname 2>/dev/null) $(hostname -f 2>/dev/null) $(hostname -I 2>/dev/null); do
    [ "$1" = "$name" ] && return 0
  done
  return 1
}

can_be_root() { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# The distribution puts the servers' tools in /usr/sbin, which is not on an ordinary user's PATH.
sbin_tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; }; }

systemd_running() { [ -d /run/systemd/system ]; }

docker_engine() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

apt_install() {
  command -v apt-get >/dev/null || die "cannot install $*: no apt-get; install them yourself or run Docker"
  can_be_root || die "installing $* needs root (or sudo): install them yourself, or run this as root"
  say "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Starts the cluster that listens on 5432. On a systemd machine the package started it when it was
# installed, and pg_ctlcluster answers a start of a running cluster with exit code 2: that counts as started.
start_postgresql_package() {
  if [ -z "$(sbin_tool pg_ctlcluster)" ]; then apt_install postgresql; fi
  local version cluster status=0
  read -r version cluster < <(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }') || true
  if [ -z "${version:-}" ]; then
    [ -n "$(pg_lsclusters -h 2>/dev/null)" ] || die "PostgreSQL is installed but has no cluster (pg_lsclusters lists none)"
    die "no PostgreSQL cluster of this machine is set to port 5432 (see pg_lsclusters): start yours, and name its port in DATABASE_URL and TEST_DATABASE_URL"
  fi
  if pg_ctlcluster "$version" "$cluster" status >/dev/null 2>&1; then
    say "PostgreSQL $version/$cluster is already running"
    return 0
  fi
  say "starting PostgreSQL $version/$cluster from the distribution's package"
  # Where systemd runs, pg_ctlcluster hands the start to the cluster's unit itself.
  as_root pg_ctlcluster "$version" "$cluster" start || status=$?
  case $status in
    0) ;;
    2) say "PostgreSQL $version/$cluster was already running" ;;
    *) die "pg_ctlcluster $version $cluster start failed (exit $status); see /var/log/postgresql/postgresql-$version-$cluster.log" ;;
  esac
}

# Starts the package's broker, unless its node is already up or booting (on a systemd machine the package
# starts it when it is installed; a second `rabbitmq-server -detached` would clash with it).
start_rabbitmq_package() {
  if [ -z "$(sbin_tool rabbitmq-server)" ]; then apt_install rabbitmq-server; fi
  if systemd_running; then
    say "starting RabbitMQ from the distribution's package (systemctl start rabbitmq-server)"
    as_root systemctl start rabbitmq-server
  elif command -v epmd >/dev/null && epmd -names 2>/dev/null | grep -q '^name rabbit at'; then
    say "RabbitMQ's node is already running; waiting for it to boot"
  else
    say "starting RabbitMQ from the distribution's package"
    as_root rabbitmq-server -detached
  fi
  # The node takes a moment to register before rabbitmqctl can even ask it whether it has booted.
  local deadline=$((SECONDS + 90))
  until as_root rabbitmqctl await_startup >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "RabbitMQ did not boot within 90 s; see its log in /var/log/rabbitmq"
    sleep 1
  done
}

# Makes sure the brokers and databases that AMQP_URL and DATABASE_URL (and TEST_AMQP_URL and
# TEST_DATABASE_URL, when set) name answer. One that does not is started when its URL names this machine
# on the standard port, the one a server started here listens on; otherwise this says which one is down.
# Of several broker nodes (a comma-separated AMQP_URL), one that answers is enough to go on: the services
# connect to the nodes that answer.
ensure_services() {
  local entries=() urls=() url entry var kind host port standard service local_broker=""
  local -A to_start=() start_host=() start_port=() up=()
  local brokers_up=0 brokers_down=()
  IFS=, read -ra urls <<<"${AMQP_URL:-$DEFAULT_AMQP_URL}"
  for url in "${urls[@]}"; do entries+=("AMQP_URL broker ${url// /}"); done
  if [ -n "${TEST_AMQP_URL:-}" ]; then
    IFS=, read -ra urls <<<"$TEST_AMQP_URL"
    for url in "${urls[@]}"; do entries+=("TEST_AMQP_URL broker ${url// /}"); done
  fi
  entries+=("DATABASE_URL database ${DATABASE_URL:-$DEFAULT_DATABASE_URL}")
  [ -z "${TEST_DATABASE_URL:-}" ] || entries+=("TEST_DATABASE_URL database $TEST_DATABASE_URL")

  for entry in "${entries[@]}"; do
    read -r var kind url <<<"$entry"
    read -r host port < <(url_endpoint "$url")
    if [ "$kind" = broker ]; then service=RabbitMQ standard=5672; else service=PostgreSQL standard=5432; fi
    if [ "$kind" = broker ] && is_local_host "$host" && [ "$port" = "$standard" ]; then local_broker=1; fi
    if port_open "$host" "$port"; then
      up["$service on $host:$port"]=1
      [ "$kind" = database ] || brokers_up=$((brokers_up + 1))
    elif is_local_host "$host" && [ "$port" = "$standard" ]; then
      to_start[$service]=1 start_host[$service]=$host start_port[$service]=$port
    elif [ "$kind" = broker ]; then
      brokers_down+=("$host:$port ($var)")
    elif is_local_host "$host"; then
      die "nothing answers on $host:$port, the PostgreSQL of $var, and one started here would listen on $standard: start yours, or correct $var"
    else
      die "nothing answers on $host:$port, the PostgreSQL of $var; a server elsewhere is not started from here: start it, or point $var at one that runs"
    fi
  done

  if [ ${#to_start[@]} -gt 0 ]; then
    if docker_engine && [ -f docker-compose.yml ]; then
      # Only what is missing: `docker compose up` of both would fail on the port the running one holds.
      local compose=()
      [ -z "${to_start[RabbitMQ]:-}" ] || compose+=(rabbitmq)
      [ -z "${to_start[PostgreSQL]:-}" ] || compose+=(postgresql)
      say "starting ${compose[*]} with docker compose"
      docker compose up -d "${compose[@]}"
    else
      [ -z "${to_start[PostgreSQL]:-}" ] || start_postgresql_package
      [ -z "${to_start[RabbitMQ]:-}" ] || start_rabbitmq_package
    fi
    for service in "${!to_start[@]}"; do
      wait_port "$service" "${start_host[$service]}" "${start_port[$service]}"
      up["$service on ${start_host[$service]}:${start_port[$service]}"]=1
      [ "$service" = PostgreSQL ] || brokers_up=$((brokers_up + 1))
    done
  fi

  if [ ${#brokers_down[@]} -gt 0 ]; then
    local down
    down=$(printf '%s, ' "${brokers_down[@]}") && down=${down%, }
    [ "$brokers_up" -gt 0 ] ||
      die "no RabbitMQ node answers: $down. A broker elsewhere, or on another port, is not started from here: start it (scripts/cluster's nodes: scripts/cluster start), or correct the URL"
    say "warning: nothing answers on $down; the services use the broker nodes that do"
  fi
  say "up: $(printf '%s\n' "${!up[@]}" | sort | paste -sd, - | sed 's/,/, /g')"
  [ -z "$local_broker" ] || ensure_rabbitmq_plugins
  check_postgres_login
}

# QUEUE_SHARDS > 1 needs the consistent-hash exchange, shipped with RabbitMQ but off by default. It is
# enabled on a broker of this machine (the package's, or the compose file's, which enables it itself);
# a broker elsewhere is left as it is, and declaring shards there says what is missing.
ensure_rabbitmq_plugins() {
  local plugins plugin=rabbitmq_consistent_hash_exchange
  plugins=$(sbin_tool rabbitmq-plugins) || return 0
  if ! can_be_root; then
    say "cannot check $plugin on the local RabbitMQ: rabbitmq-plugins needs root. QUEUE_SHARDS > 1 needs it: sudo rabbitmq-plugins enable $plugin"
    return 0
  fi
  # Read whole before grep looks: grep -q leaving early would fail the pipe under pipefail.
  if grep -q "$plugin" <<<"$(as_root "$plugins" -q list -e "$plugin" 2>/dev/null)"; then return 0; fi
  say "enabling $plugin on the local RabbitMQ"
  as_root "$plugins" -q enable "$plugin" >/dev/null ||
    say "could not enable $plugin: QUEUE_SHARDS > 1 will fail until it is enabled"
}

# rabbitmqctl of the broker on this machine: the package's (which needs root: its wrapper refuses anyone
# but root and the rabbitmq user), or the compose file's container. Fails with 127 when neither is reachable.
broker_ctl() {
  local ctl
  if ctl=$(sbin_tool rabbitmqctl) && can_be_root; then as_root "$ctl" -q "$@"
  elif docker_engine && [ -f docker-compose.yml ] && docker compose ps -q rabbitmq 2>/dev/null | grep -q .; then
    docker compose exec -T rabbitmq rabbitmqctl -q "$@"
  else return 127; fi
}

# One broker user per service on the local broker, each with only what `consumer permissions` says it
# needs, and the dead-letter queue's length limit (`consumer dead-letter-policy`). Passwords are made
# once and kept in .run/broker-users (mode 600). Skipped, saying so, when AMQP_URL names a broker of
# your own or no rabbitmqctl reaches the local one: the services then log in as AMQP_URL's user.
ensure_broker_users() {
  if [ -n "${AMQP_URL:-}" ]; then say "AMQP_URL is set: both services log in as its user"; return 1; fi
  if ! broker_ctl status >/dev/null 2>&1; then
    say "no rabbitmqctl reaches the local broker (it needs root or sudo): both services log in as guest"; return 1
  fi
  local file=.run/broker-users service password configure write read name pattern definition
  [ -f "$file" ] || (umask 077; for service in publisher consumer; do
    echo "$service $(head -c 18 /dev/urandom | base64 | tr -d '/+=')"; done >"$file")
  for service in publisher consumer; do
    password=$(awk -v s="$service" '$1 == s { print $2 }' "$file")
    # Read whole before grep looks: grep -q leaving early would fail the pipe under pipefail, and the
    # user would be taken for missing (its password then never changed).
    if grep -q "^message-${service}[[:space:]]" <<<"$(broker_ctl list_users)"; then
      broker_ctl change_password "message-$service" "$password" >/dev/null
    else
      broker_ctl add_user "message-$service" "$password" >/dev/null
    fi
    IFS=$'\t' read -r configure write read < <(target/release/consumer permissions "$service")
    broker_ctl set_permissions -p / "message-$service" "$configure" "$write" "$read" >/dev/null
  done
  # No policy is printed with QUEUE_TYPE=classic, whose dead letters a full .dead would drop.
  if IFS=$'\t' read -r name pattern definition < <(target/release/consumer dead-letter-policy); then
    broker_ctl set_policy --apply-to queues "$name" "$pattern" "$definition" >/dev/null
  fi
  say "the services log in as message-publisher and message-consumer, each allowed only its own part"
}

# The AMQP_URL of service $1's own broker user (after ensure_broker_users).
broker_user_url() {
  local password
  password=$(awk -v s="$1" '$1 == s { print $2 }' .run/broker-users)
  echo "amqp://message-$1:$password@127.0.0.1:5672/%2f"
}

# The broker's memory high watermark as set_vm_memory_high_watermark takes it back: a fraction of the
# machine's memory ("0.4") or "absolute <bytes>". Fails when the broker cannot be asked.
broker_memory_watermark() {
  local value
  value=$(broker_ctl eval 'vm_memory_monitor:get_vm_memory_high_watermark().' 2>/dev/null) || return 1
  value=$(tr -d '[:space:]' <<<"$value")
  case $value in
    \{absolute,*\}) value=${value#\{absolute,} && echo "absolute ${value%\}}" ;;
    [0-9]*) echo "$value" ;;
    *) return 1 ;;
  esac
}

# Sets the broker's memory high watermark to what broker_memory_watermark printed.
set_broker_memory_watermark() {
  # shellcheck disable=SC2086 # "absolute <bytes>" is two arguments
  broker_ctl set_vm_memory_high_watermark $1 >/dev/null
}

# The logins that DATABASE_URL (and TEST_DATABASE_URL, when set) make must work. A distribution's
# PostgreSQL asks for a password over TCP, and the default URL gives none: say how to fix that rather
# than fail later with a cryptic error. A database that does not exist yet is fine: the consumer
# creates its own, and the tests theirs.
check_postgres_login() {
  command -v psql >/dev/null || return 0
  local url error
  for url in "${DATABASE_URL:-$DEFAULT_DATABASE_URL}" ${TEST_DATABASE_URL:+"$TEST_DATABASE_URL"}; do
    # -w: psql would otherwise stop and ask for the password at the terminal.
    if error=$(PGCONNECT_TIMEOUT=5 psql -w "$url" -Atqc 'select 1' 2>&1 >/dev/null) ||
      grep -q 'database ".*" does not exist' <<<"$error"; then
      continue
    fi
    die "cannot log in to PostgreSQL with $(redact_url "$url"): ${error:-no answer}
For a development machine, either
  - trust connections from this machine (the end-to-end tests need this: they log in as roles they create,
    without passwords): put these two lines before the other 'host' lines of the file that
    sudo -u postgres psql -Atc 'SHOW hba_file' names, then sudo -u postgres psql -c 'SELECT pg_reload_conf()'
      host all all 127.0.0.1/32 trust
      host all all ::1/128 trust
  - or, for scripts/start alone, give the consumer a role of its own with a password of its own:
      password=\$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
      sudo -u postgres psql -c \"CREATE ROLE messages LOGIN PASSWORD '\$password'\"
      sudo -u postgres createdb -O messages messages
      export DATABASE_URL=\"postgres://messages:\$password@127.0.0.1:5432/messages\""
  done
}

# $1 with its password replaced by ***, for messages.
redact_url() { sed -E 's#(://[^:/@]*:)[^@/]*@#\1***@#' <<<"$1"; }

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or your distribution's cargo package"
}

# What the observability tests drive besides the services: Prometheus and promtool (Debian's prometheus),
# and headless Chromium with its WebDriver (chromium, chromium-driver). Installed without recommends. The
# tests start a Prometheus server of their own, on a free port with its own data directory, so a
# Prometheus service of yours is never stopped or changed. Only a server that this installation itself
# started (the package was not installed, and no prometheus service ran, before) is stopped again.
ensure_observability_tools() {
  local missing=() prometheus_was_there=1
  command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null ||
    die "missing ${missing[*]}: install Prometheus (prometheus, promtool), Chromium and ChromeDriver for the observability tests"
  can_be_root || die "missing ${missing[*]}: installing them needs root (or sudo)"
  if [[ " ${missing[*]} " == *" prometheus "* ]] && ! package_installed prometheus &&
    ! { systemd_running && systemctl is-active --quiet prometheus 2>/dev/null; }; then
    prometheus_was_there=""
  fi
  say "installing ${missing[*]} with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -z "$prometheus_was_there" ] && systemd_running && systemctl is-active --quiet prometheus 2>/dev/null; then
    say "stopping the Prometheus server that installing the package started (the tests run their own)"
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

package_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
