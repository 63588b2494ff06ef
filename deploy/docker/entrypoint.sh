#!/usr/bin/env bash
# The container's entrypoint (under tini): run the server, the gateway, or both.
#
#   entrypoint.sh server [SERVER ARGS...]                  python -m server ...
#   entrypoint.sh gateway [GATEWAY ARGS...]                python -m gateway run ...
#   entrypoint.sh all [SERVER ARGS...] [-- GATEWAY ARGS...] both; the default command
#
# Paths are relative to the working directory (the image's /app): models/, build/gateway/
# and web/. Extra arguments come after the defaults here, so they win (argparse keeps the
# last value of a flag). The gateway forwards to 127.0.0.1 at the server's gRPC port: in
# `all` the server's --grpc-port if given, else $INFERENCE_GRPC_PORT, else 8001; unless
# the arguments name upstreams of their own (--upstream is repeatable: one per replica).
#
# `all` stops both when either exits. It exits 0 only when both stopped cleanly after
# SIGTERM or SIGINT; if either exits on its own, the other is stopped and the exit
# status is that of the first one (or 1 if that was 0: nothing should exit unasked).
set -euo pipefail

gateway_defaults() {
	local grpc_port=$1
	shift
	local args=(--listen-host 0.0.0.0 --build-dir build/gateway)
	if [[ " $* " != *" --upstream "* && " $* " != *" --upstream="* ]]; then
		args+=(--upstream "127.0.0.1:$grpc_port")
	fi
	if [[ -f web/index.html ]]; then # the gRPC-web demo page, as `make run` serves it
		args+=(--static "/web/=web/index.html")
		local file
		for file in web/*; do
			args+=(--static "/$file=$file")
		done
	fi
	printf '%s\0' "${args[@]}"
}

run_gateway() { # GRPC_PORT [GATEWAY ARGS...]
	local grpc_port=$1 defaults
	shift
	mapfile -d '' defaults < <(gateway_defaults "$grpc_port" "$@")
	exec python -m gateway run "${defaults[@]}" "$@"
}

run_all() {
	local server_args=() grpc_port=${INFERENCE_GRPC_PORT:-8001}
	while [[ $# -gt 0 && $1 != -- ]]; do
		case $1 in
		--grpc-port=*) grpc_port=${1#*=} ;;
		--grpc-port) grpc_port=${2:-$grpc_port} ;;
		esac
		server_args+=("$1")
		shift
	done
	[[ $# -gt 0 ]] && shift # the --
	# The gateway forwards to the server's port, unless the caller names upstreams.
	local gateway_args=("$grpc_port" "$@")

	local stopping=0 signalled=0 server="" gateway=""
	stop_both() { # once: a second SIGTERM could reach a server past its own handlers
		if [[ $signalled -eq 0 && -n $gateway ]]; then
			signalled=1
			kill -TERM "$server" "$gateway" 2>/dev/null || true
		fi
	}
	trap 'stopping=1; stop_both' TERM INT
	python -m server "${server_args[@]}" &
	server=$!
	(run_gateway "${gateway_args[@]}") &
	gateway=$!
	[[ $stopping -eq 1 ]] && stop_both # a signal came while they were starting

	# The first to exit; a trapped signal also ends `wait -n` early, so wait again until
	# one of them really has exited.
	local first=0
	while true; do
		first=0
		wait -n "$server" "$gateway" || first=$?
		if ! kill -0 "$server" 2>/dev/null || ! kill -0 "$gateway" 2>/dev/null; then
			break
		fi
	done
	stop_both
	local server_status=0 gateway_status=0
	wait "$server" || server_status=$?
	wait "$gateway" || gateway_status=$?
	if [[ $stopping -eq 1 ]]; then
		# Asked to stop: each one's own status says whether it stopped cleanly.
		[[ $server_status -eq 0 && $gateway_status -eq 0 ]] && return 0
		return $((server_status != 0 ? server_status : gateway_status))
	fi
	echo "entrypoint: the server or the gateway exited unasked; stopped both" >&2
	return $((first != 0 ? first : 1))
}

command=${1:-all}
shift || true
case $command in
server) exec python -m server "$@" ;;
gateway) run_gateway "${INFERENCE_GRPC_PORT:-8001}" "$@" ;;
all) run_all "$@" ;;
*)
	echo "usage: entrypoint.sh server|gateway|all [ARGS...] (all: SERVER ARGS [-- GATEWAY ARGS])" >&2
	exit 2
	;;
esac
