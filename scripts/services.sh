# shellcheck shell=bash
# Finds RabbitMQ and PostgreSQL on their standard local ports, or starts them: with Docker Compose where a
# Docker engine runs, otherwise from the distribution's packages (installing them with apt-get if needed).
# Sourced by scripts/start and scripts/test; honours AMQP_URL and DATABASE_URL when they point elsewhere.

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Is something listening on host:port?
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  local name=$1 host=$2 port=$3 deadline=$((SECONDS + 90))
  until port_open "$host" "$port"; do
    [ $SECONDS -lt $deadline ] || die "$name did not come up on $host:$port within 90 s"
    sleep 1
  done
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

docker_engine() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

apt_install() {
  command -v apt-get >/dev/null || die "cannot install $*: no apt-get; install them yourself or run Docker"
  say "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

start_postgresql_package() {
  if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql; fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$version" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql"
  say "starting PostgreSQL $version from the distribution's package"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
    as_root pg_ctlcluster "$version" main start
}

start_rabbitmq_package() {
  if ! command -v rabbitmq-server >/dev/null; then apt_install rabbitmq-server; fi
  say "starting RabbitMQ from the distribution's package"
  as_root rabbitmq-server -detached
  # The node takes a moment to register before rabbitmqctl can even ask it whether it has booted.
  local deadline=$((SECONDS + 90))
  until as_root rabbitmqctl await_startup >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "RabbitMQ did not boot within 90 s; see its log in /var/log/rabbitmq"
    sleep 1
  done
}

# Makes sure both peers answer on 127.0.0.1 (or wherever AMQP_URL / DATABASE_URL point).
ensure_services() {
  local pg_host=127.0.0.1 pg_port=5432 mq_host=127.0.0.1 mq_port=5672
  if ! port_open $pg_host $pg_port || ! port_open $mq_host $mq_port; then
    if docker_engine && [ -f docker-compose.yml ]; then
      say "starting RabbitMQ and PostgreSQL with docker compose"
      docker compose up -d rabbitmq postgresql
    else
      port_open $pg_host $pg_port || start_postgresql_package
      port_open $mq_host $mq_port || start_rabbitmq_package
    fi
  fi
  wait_port PostgreSQL $pg_host $pg_port
  wait_port RabbitMQ $mq_host $mq_port
  say "PostgreSQL on $pg_host:$pg_port and RabbitMQ on $mq_host:$mq_port are up"
  ensure_rabbitmq_plugins
  check_postgres_login
}

# QUEUE_SHARDS > 1 needs the consistent-hash exchange, shipped with RabbitMQ but off by default. It is
# enabled on a broker of this machine (the package's, or the compose file's, which enables it itself);
# a broker elsewhere is left as it is, and declaring shards there says what is missing.
ensure_rabbitmq_plugins() {
  command -v rabbitmq-plugins >/dev/null || return 0
  local plugin=rabbitmq_consistent_hash_exchange
  if as_root rabbitmq-plugins -q list -e "$plugin" 2>/dev/null | grep -q "$plugin"; then return 0; fi
  say "enabling $plugin on the local RabbitMQ"
  as_root rabbitmq-plugins -q enable "$plugin" >/dev/null ||
    say "could not enable $plugin: QUEUE_SHARDS > 1 will fail until it is enabled"
}

# rabbitmqctl of the broker on this machine: the package's, or the compose file's container.
broker_ctl() {
  if command -v rabbitmqctl >/dev/null; then as_root rabbitmqctl -q "$@"
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
    say "no rabbitmqctl reaches the local broker: both services log in as guest"; return 1
  fi
  local file=.run/broker-users service password configure write read name pattern definition
  [ -f "$file" ] || (umask 077; for service in publisher consumer; do
    echo "$service $(head -c 18 /dev/urandom | base64 | tr -d '/+=')"; done >"$file")
  for service in publisher consumer; do
    password=$(awk -v s="$service" '$1 == s { print $2 }' "$file")
    if broker_ctl list_users | grep -q "^message-$service[[:space:]]"; then
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

# The default DATABASE_URL logs in as postgres without a password. A distribution's PostgreSQL asks for
# one over TCP; say how to fix that rather than fail later with a cryptic error.
check_postgres_login() {
  command -v psql >/dev/null || return 0
  local url=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
  if ! PGCONNECT_TIMEOUT=5 psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
    die "cannot log in to PostgreSQL as $url. Either allow it (for a local dev box: a 'host all postgres 127.0.0.1/32 trust' line in pg_hba.conf), or set a password with
    sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'postgres'\"
  and export DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/messages TEST_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres"
  fi
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or your distribution's cargo package"
}

# What the observability tests drive besides the services: Prometheus and promtool (Debian's prometheus),
# and headless Chromium with its WebDriver (chromium, chromium-driver). Installed without recommends, and
# a Prometheus server the package starts is stopped: the tests start their own.
ensure_observability_tools() {
  local missing=()
  command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null ||
    die "missing ${missing[*]}: install Prometheus (prometheus, promtool), Chromium and ChromeDriver for the observability tests"
  say "installing ${missing[*]} with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -d /run/systemd/system ] && systemctl is-active --quiet prometheus 2>/dev/null; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}
