#!/usr/bin/env bash
# Submit one phase of the pipeline to a running Ray cluster as a Ray job.
#
#   jobs/submit.sh N [--address URL] [--results DIR] [--wait] [--submission-id ID] [--insecure]
#                    [-- phase args]
#
#   N                 phase number 1-5 (runs `python -m vpt_ray.phase N` on the cluster)
#   --address URL     jobs API of the cluster (the dashboard URL). Default: $RAY_API_SERVER_ADDRESS,
#                     else $RAY_ADDRESS when it is an http(s) URL, else http://127.0.0.1:8265
#                     (what `ray dashboard cluster.yaml` forwards to the head node).
#   --results DIR     where the run's artifacts, tracker and log go ON THE CLUSTER: an absolute
#                     path on the head (fetch with `ray rsync-down`), or $VPT_RESULTS_DIR. Without
#                     it they land in the job's temporary copy of the working dir (Ray may delete it).
#   --wait            stream the job's log and exit with its result (0 = SUCCEEDED, 1 = otherwise)
#   --submission-id   job id to use (default: vpt-phaseN-<UTC time>-<random>)
#   --insecure        submit even if the cluster reports authentication disabled (refused otherwise)
#   -- ARGS           passed to the phase verbatim, e.g. -- --set search.num_samples=16
#
# The repository root is uploaded as the job's working_dir with jobs/runtime_env.yaml (which
# excludes data/, artifacts/, logs/ and virtualenvs). Inside the job Ray sets RAY_ADDRESS, so the
# phase joins this cluster and sizes itself from the cluster's resources.
#
# Secrets: the values of POLYGON_API_KEY and GOOGLE_APPLICATION_CREDENTIALS are never put into the
# job (runtime env, entrypoint or metadata), because `ray job list` and the jobs API print those
# in plain text. The job reads them from the environment of the cluster's nodes (exported before
# `ray start`, or fetched from Secret Manager by cluster.yaml). This script never prints them.
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "error: jobs/submit.sh: $*" >&2
    exit 2
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in
    -h | --help) usage; exit 0 ;;
esac
phase=$1
shift
[[ $phase =~ ^[1-5]$ ]] || die "phase must be 1-5, got '$phase' (usage: jobs/submit.sh N [--address URL] [-- args])"

address=${RAY_API_SERVER_ADDRESS:-}
if [[ -z $address && ${RAY_ADDRESS:-} =~ ^https?:// ]]; then
    address=$RAY_ADDRESS
fi
address=${address:-http://127.0.0.1:8265}
wait_for_result=0
insecure=0
submission_id=""
results=${VPT_RESULTS_DIR:-}
phase_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --address)
            [[ $# -ge 2 && -n $2 ]] || die "--address needs a URL such as http://127.0.0.1:8265"
            address=$2
            shift 2
            ;;
        --address=*) address=${1#--address=}; shift ;;
        --results)
            [[ $# -ge 2 && -n $2 ]] || die "--results needs a directory on the cluster"
            results=$2
            shift 2
            ;;
        --results=*) results=${1#--results=}; shift ;;
        --wait) wait_for_result=1; shift ;;
        --insecure) insecure=1; shift ;;
        --submission-id)
            [[ $# -ge 2 && -n $2 ]] || die "--submission-id needs a value"
            submission_id=$2
            shift 2
            ;;
        --) shift; phase_args=("$@"); break ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (phase arguments go after '--', e.g. -- --set a.b=c)" ;;
    esac
done
[[ $address =~ ^https?:// ]] || die "--address must be the jobs API URL (http://HOST:8265), got '$address'"

results_args=()
if [[ -n $results ]]; then
    [[ $results == /* || $results =~ ^[a-z][a-z0-9+.-]*:// ]] ||
        die "--results must be an absolute path on the cluster (or a URI), got '$results'"
    results=${results%/}
    # before the user's own --set flags, so an explicit paths.* still wins
    results_args=(--set "paths.artifacts=$results/artifacts"
        --set "paths.tracker=$results/SCALING_TRACKER.md"
        --set "paths.logs=$results/logs")
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
[[ -f jobs/runtime_env.yaml ]] || die "jobs/runtime_env.yaml is missing under $repo_root"

if [[ -n ${RAY_BIN:-} ]]; then
    ray_bin=$RAY_BIN
elif [[ -x .venv/bin/ray ]]; then
    ray_bin=.venv/bin/ray
else
    ray_bin=$(command -v ray) || die "no 'ray' command found: install the project (pip install -e .)"
fi

# Ray 2.60's dashboard and jobs API use token authentication (see jobs/README.md).
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}

# The token file is a credential: readable by its owner only, whoever wrote it (Ray writes 644).
token_file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
if [[ -f $token_file && -O $token_file ]] && [[ $(ls -ln "$token_file" | cut -c5-10) != ------ ]]; then
    chmod 600 "$token_file"
    echo "note: $token_file was open to group or others: now mode 600" >&2
fi

# A cluster without authentication runs any job anyone who reaches its port submits: refuse it
# unless --insecure. /api/authentication_mode is public on Ray's dashboard ("token"/"disabled").
fetch_auth_mode() {
    if command -v curl >/dev/null; then
        curl -fsS --max-time 15 "$1/api/authentication_mode"
    else
        python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=15).read().decode())' \
            "$1/api/authentication_mode"
    fi
}
# Nothing answering at the address is one line here, not the Ray CLI's five tracebacks: curl's
# exit codes 6, 7, 28 (and the fallback's URLError) mean no server, 22 an HTTP error (a server).
auth_reply=$(fetch_auth_mode "$address" 2>&1) || {
    code=$?
    case $code in
        6 | 7 | 28 | 35 | 52 | 56 | 99)
            die "no Ray cluster answers at $address (curl exit $code: $(echo "$auth_reply" | tail -n 1));" \
                "start one (jobs/README.md) or pass --address URL of its dashboard" ;;
        1) if [[ $auth_reply == *URLError* ]]; then
               die "no Ray cluster answers at $address ($(echo "$auth_reply" | tail -n 1));" \
                   "start one (jobs/README.md) or pass --address URL of its dashboard"
           fi ;;
    esac
}
auth_mode=$(echo "$auth_reply" | sed -n 's/.*"authentication_mode" *: *"\([a-z]*\)".*/\1/p')
if [[ $auth_mode == disabled ]]; then
    if [[ $insecure -eq 0 ]]; then
        die "the cluster at $address reports authentication disabled: anyone who can reach" \
            "that port can run code on it through its jobs API. Restart it with" \
            "RAY_AUTH_MODE=token (jobs/README.md, Security), or pass --insecure to submit anyway"
    fi
    echo "warning: submitting to $address with authentication disabled (--insecure)" >&2
fi

if [[ -z $submission_id ]]; then
    submission_id="vpt-phase${phase}-$(date -u +%Y%m%d-%H%M%S)-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
fi

# Separate words: the Ray CLI shell-quotes each one (shlex.join), so `--set data.tickers=[A,B]`
# reaches the phase intact instead of being globbed by the job's shell.
entrypoint=(python -m vpt_ray.phase "$phase"
    "${results_args[@]+"${results_args[@]}"}" "${phase_args[@]+"${phase_args[@]}"}")

git_sha=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $git_sha != unknown ]] && [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    git_sha+="-dirty"
fi
metadata=$(printf '{"phase": "%s", "git_sha": "%s", "submitted_by": "jobs/submit.sh"}' \
    "$phase" "$git_sha")

for name in POLYGON_API_KEY GOOGLE_APPLICATION_CREDENTIALS; do
    if [[ -n ${!name:-} ]]; then
        echo "note: $name is set here but is not sent with the job; the job reads it from the" \
            "cluster nodes' environment (jobs/README.md, Security)." >&2
    fi
done

# Nothing secret travels with the request: the job's environment is built on the cluster. The
# secret variables are also removed from the Ray CLI's own environment, so no code path of it can
# pick them up.
ray_cli() {
    env -u POLYGON_API_KEY -u GOOGLE_APPLICATION_CREDENTIALS "$ray_bin" "$@"
}

submit=(job submit
    --address "$address"
    --submission-id "$submission_id"
    --working-dir .
    --runtime-env jobs/runtime_env.yaml
    --metadata-json "$metadata")

results_note=${results:-"the job's temporary working dir on the cluster (--results DIR keeps them)"}
print_next_steps() {
    cat <<EOF
$submission_id
phase $phase -> job $submission_id on $address (code $git_sha)
  results:   $results_note
  follow:    ray job logs -f --address $address $submission_id
  status:    ray job status --address $address $submission_id
  stop:      ray job stop --address $address $submission_id
  list:      ray job list --address $address
  dashboard: $address/#/jobs/$submission_id
  (these need RAY_AUTH_MODE=token and the cluster token in ~/.ray/auth_token or RAY_AUTH_TOKEN)
EOF
}

# The Ray CLI's output is also kept, to recognise a cluster whose dashboard agent never started:
# Ray answers "No available agent to submit job" to every submission for as long as one waits.
# On one machine the usual cause is a second Ray (a local `python -m vpt_ray.phase` run, another
# `ray start`) holding the agent's default port 52365 when the head started.
submit_log=$(mktemp)
trap 'rm -f "$submit_log"' EXIT
no_agent() {
    grep -q "No available agent to submit job" "$submit_log" || return 0
    die "the cluster at $address has no dashboard agent to take jobs. On one machine another Ray" \
        "(a local 'python -m vpt_ray.phase' run, another 'ray start') usually holds the agent's" \
        "port 52365 (check: ss -ltnp | grep 52365). Restart this head with its own agent ports," \
        "as jobs/README.md shows: ray start --head --dashboard-agent-listen-port 52366 ..."
}

if [[ $wait_for_result -eq 1 ]]; then
    # The id is chosen here, so it can be printed before the log stream starts. `ray job submit`
    # without --no-wait exits 0 only when the job ends SUCCEEDED.
    print_next_steps
    rc=0
    ray_cli "${submit[@]}" -- "${entrypoint[@]}" > >(tee -a "$submit_log") \
        2> >(tee -a "$submit_log" >&2) || rc=$?
    wait  # the tee processes
    [[ $rc -eq 0 ]] || no_agent
    exit "$rc"
else
    # the Ray CLI's output is shown after it ends, unless its failure is recognised (one line)
    ray_cli "${submit[@]}" --no-wait -- "${entrypoint[@]}" >"$submit_log" 2>&1 || {
        no_agent
        cat "$submit_log" >&2
        die "ray job submit to $address failed (see above)"
    }
    cat "$submit_log" >&2
    print_next_steps
fi
