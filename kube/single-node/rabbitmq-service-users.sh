#!/bin/sh
# The broker's postStart hook: one user per service with only the permissions it needs, and the length
# limit of messages.dead. The permissions and the policy are what `consumer permissions publisher`,
# `consumer permissions consumer` and `consumer dead-letter-policy` print for QUEUE_NAME=messages and
# DEAD_LETTER_LIMIT=100000 (tests/tests/manifests.rs checks that they agree).
set -eu
rabbitmqctl -q await_startup --timeout 300
user() {
  if rabbitmqctl -q list_users | grep -q "^$1[[:space:]]"; then
    rabbitmqctl -q change_password "$1" "$2"
  else
    rabbitmqctl -q add_user "$1" "$2"
  fi
}
user message-publisher "$MESSAGE_PUBLISHER_PASSWORD"
rabbitmqctl -q set_permissions -p / message-publisher '^$' '^messages\.exchange$' '^$'
user message-consumer "$MESSAGE_CONSUMER_PASSWORD"
rabbitmqctl -q set_permissions -p / message-consumer '^$' '^messages\.(dlx|exchange)$' '^messages(\.[0-9]+|\.unrouted|\.dead)?$'
rabbitmqctl -q set_policy --apply-to queues messages.dead-limit '^messages\.dead$' '{"max-length":100000,"overflow":"reject-publish"}'
