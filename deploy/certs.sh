#!/bin/sh
# Creates the CA and the mTLS certificates of the agent API and stores them as the two Secrets
# the manifests mount. Needs the havoc binary (`havoc certs`, from crates/havoc-api's pki) and kubectl.
#   deploy/certs.sh [NAMESPACE] [DIR]
set -eu
NS="${1:-havoc-system}"
DIR="${2:-./havoc-certs}"
# The operator dials agent pod IPs and verifies the DNS name `havoc-agent`.
havoc certs --out "$DIR" --san havoc-agent
kubectl -n "$NS" create secret generic havoc-agent-tls \
  --from-file=ca.pem="$DIR/ca.pem" \
  --from-file=agent.pem="$DIR/agent.pem" \
  --from-file=agent-key.pem="$DIR/agent-key.pem" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic havoc-operator-tls \
  --from-file=ca.pem="$DIR/ca.pem" \
  --from-file=operator.pem="$DIR/operator.pem" \
  --from-file=operator-key.pem="$DIR/operator-key.pem" \
  --dry-run=client -o yaml | kubectl apply -f -
echo "secrets havoc-agent-tls and havoc-operator-tls written in $NS (CA key kept in $DIR/ca-key.pem)"
