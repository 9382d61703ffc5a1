#!/usr/bin/env bash
# Renders an IPPool with the real kubectl when no cluster is at hand:
# serves the recorded API object (and the API discovery kubectl asks for
# first) from a throwaway read-only HTTP server on loopback, then runs
# `kubectl describe ippool` and `kubectl get ippools -o wide` against it.
#
#   scripts/kubectl-offline.sh [POOL.json]
#
# Without an argument it uses the object the test
# `ippool_wide_columns_show_status_and_usage` records (run
# `cargo test -p tests --test datastore_kubernetes` first). The printer
# columns come from deploy/crds.yaml, as an API server would serve them.
# Needs kubectl and python3 (with PyYAML).
set -euo pipefail
cd "$(dirname "$0")/.."
obj="${1:-target/tmp/ippool-default-ipv4-ippool.json}"
[ -f "$obj" ] || { echo "no recorded object at $obj" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "kubectl is not installed" >&2; exit 1; }

port_file="$(mktemp)"
python3 - "$obj" deploy/crds.yaml "$port_file" <<'PY' &
import json, sys, yaml, http.server, datetime
obj = json.load(open(sys.argv[1]))
crd = next(d for d in yaml.safe_load_all(open(sys.argv[2]))
           if d and d["spec"]["names"]["kind"] == "IPPool")
version = crd["spec"]["versions"][0]
name = obj["metadata"]["name"]
base = "/apis/crd.projectcalico.org/v1"

def cell(o, path):
    # The printer columns' JSONPaths: `.a.b` steps, and list filters of the
    # form `[?(@.key=="value")]` (the first match), as the API server
    # evaluates them.
    import re
    for step in re.findall(r'\.(\w+)|\[\?\(@\.(\w+)=="([^"]*)"\)\]', path):
        field, key, value = step
        if field:
            o = o.get(field) if isinstance(o, dict) else None
        else:
            o = next((x for x in (o or []) if isinstance(x, dict) and x.get(key) == value), None)
    return o

def table(wide):
    cols = [{"name": "Name", "type": "string", "format": "name", "priority": 0}]
    cols += [{"name": c["name"], "type": c["type"], "priority": c.get("priority", 0)}
             for c in version.get("additionalPrinterColumns", [])]
    cells = [name] + [cell(obj, c["jsonPath"]) for c in version.get("additionalPrinterColumns", [])]
    for i, c in enumerate(cols):
        if c["type"] == "date" and cells[i]:
            t = datetime.datetime.fromisoformat(cells[i].replace("Z", "+00:00"))
            days = (datetime.datetime.now(datetime.timezone.utc) - t).days
            cells[i] = f"{days}d"
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": cols,
            "rows": [{"cells": cells, "object": {"kind": "PartialObjectMetadata",
                      "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}}]}

routes = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
        "name": "crd.projectcalico.org",
        "versions": [{"groupVersion": "crd.projectcalico.org/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "crd.projectcalico.org/v1", "version": "v1"}}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "events", "singularName": "event", "namespaced": True, "kind": "Event",
         "verbs": ["get", "list"]}]},
    base: {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "crd.projectcalico.org/v1",
           "resources": [{"name": "ippools", "singularName": "ippool", "namespaced": False,
                          "kind": "IPPool", "verbs": ["get", "list"]}]},
    "/api/v1/events": {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []},
}

class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        path = self.path.split("?")[0]
        wants_table = "as=Table" in self.headers.get("Accept", "")
        if path == f"{base}/ippools/{name}":
            body = table(True) if wants_table else obj
        elif path == f"{base}/ippools":
            body = table(True) if wants_table else {
                "kind": "IPPoolList", "apiVersion": "crd.projectcalico.org/v1",
                "metadata": {}, "items": [obj]}
        elif path in routes:
            body = routes[path]
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

srv = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[3], "w").write(str(srv.server_address[1]))
srv.serve_forever()
PY
server=$!
trap 'kill $server 2>/dev/null; rm -f "$port_file"' EXIT
for _ in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
port="$(cat "$port_file")"
[ -n "$port" ] || { echo "the offline API server did not start" >&2; exit 1; }

k() { kubectl --server "http://127.0.0.1:$port" --cache-dir "$(mktemp -d)" "$@"; }
name="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["name"])' "$obj")"
echo "\$ kubectl get ippools -o wide"
k get ippools -o wide
echo
echo "\$ kubectl describe ippool $name"
k describe ippool "$name"
