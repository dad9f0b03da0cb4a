#!/usr/bin/env bash
# Prepare what `ray up cluster.yaml` copies to the cluster's nodes (its file_mounts):
#
#   bash jobs/stage_cluster.sh [GIT_REF]     (default HEAD)
#
#   build/cluster-src   the committed files at GIT_REF (git archive): the version the nodes install.
#                       Only committed files, so data/, artifacts/, .venv and local secret files
#                       can never be copied to the cluster. Override the path with VPT_STAGE_DIR.
#   ~/.ray/auth_token   Ray's cluster token (RAY_AUTH_MODE=token), generated once if missing. The
#                       same file authenticates your `ray job submit` through the dashboard tunnel.
#                       The token is never printed.
set -euo pipefail

die() {
    echo "jobs/stage_cluster.sh: $*" >&2
    exit 2
}

ref=${1:-HEAD}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

sha=$(git rev-parse --verify --quiet "${ref}^{commit}") ||
    die "'$ref' is not a commit of this repository (try a branch, tag or sha)"
out=${VPT_STAGE_DIR:-build/cluster-src}
marker=.vpt-cluster-src
if [[ -e $out && ! -e $out/$marker ]]; then
    die "$out exists and was not made by this script: refusing to replace it"
fi
rm -rf "$out"
mkdir -p "$out"
git archive --format=tar "$sha" | tar -x -C "$out"
echo "$sha" >"$out/$marker"

if [[ $ref == HEAD ]] && [[ -n $(git status --porcelain --untracked-files=no) ]]; then
    echo "note: uncommitted changes are not staged (the nodes install $sha); jobs still upload" \
        "your working tree as their working_dir." >&2
fi

if [[ -n ${RAY_BIN:-} ]]; then
    ray_bin=$RAY_BIN
elif [[ -x .venv/bin/ray ]]; then
    ray_bin=.venv/bin/ray
else
    ray_bin=$(command -v ray) || die "no 'ray' command found: install the project (pip install -e .)"
fi
token_file="$HOME/.ray/auth_token"
if [[ ! -s $token_file ]]; then
    "$ray_bin" get-auth-token --generate >/dev/null 2>&1 || die "could not generate $token_file"
    [[ -s $token_file ]] || die "ray get-auth-token did not write $token_file"
fi
# owner-only whoever wrote it (Ray writes it 644); cluster.yaml copies it to the nodes as is
chmod 700 "$HOME/.ray"
chmod 600 "$token_file"

echo "staged $sha into $out; cluster token at $token_file"
echo "next: ray up cluster.yaml   (from $repo_root)"
