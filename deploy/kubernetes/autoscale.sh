#!/bin/sh
# The `command` provisioner for the StatefulSet in ringkv.yaml (an example).
#
#   ringkv autoscale --http ringkv-0.ringkv-peers:7380 --provisioner command \
#     --create 'deploy/kubernetes/autoscale.sh create' \
#     --destroy 'deploy/kubernetes/autoscale.sh destroy'
#
# create: adds one pod (the next ordinal), waits until it answers, prints its
#         HTTP address (the autoscaler then waits until it is NORMAL).
# destroy: runs after the autoscaler has decommissioned the node (its data
#          is streamed away and it has left the ring). The autoscaler removes
#          the most recently added node first, which for a StatefulSet is the
#          highest ordinal: scaling down by one deletes exactly that pod. Its
#          volume claim is deleted too: a node that has left cannot rejoin
#          under its old identity.
set -eu
NAMESPACE="${NAMESPACE:-default}"
STS="${STS:-ringkv}"
kc() { kubectl --namespace "$NAMESPACE" "$@"; }
replicas() { kc get statefulset "$STS" -o jsonpath='{.spec.replicas}'; }

case "${1:-}" in
create)
    n=$(replicas)
    kc scale statefulset "$STS" --replicas=$((n + 1)) >&2
    kc wait --for=condition=Ready "pod/$STS-$n" --timeout=600s >&2
    echo "$STS-$n.$STS-peers.$NAMESPACE.svc.cluster.local:7380"
    ;;
destroy)
    n=$(replicas)
    last=$((n - 1))
    case "$RINGKV_NODE_HTTP" in
    "$STS-$last".*) ;;
    *) echo "refusing: $RINGKV_NODE_HTTP is not the highest ordinal ($STS-$last)" >&2; exit 1 ;;
    esac
    kc scale statefulset "$STS" --replicas="$last" >&2
    kc wait --for=delete "pod/$STS-$last" --timeout=600s >&2 || true
    kc delete pvc "data-$STS-$last" --wait=false >&2
    ;;
*)
    echo "usage: $0 create|destroy" >&2
    exit 2
    ;;
esac
