# Sourced by the scripts that set this checkout beside another revision, with their arguments:
# checks `REV [ROUNDS]` (ROUNDS defaults to DEFAULT_ROUNDS, set before sourcing), then checks REV
# out in a scratch worktree, $SCRATCH/other, removed with the rest of $SCRATCH on exit.
# Leaves the working directory at the top of this checkout and sets REV, ROUNDS and SCRATCH.

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[[ $# -ge 1 ]] || { echo "usage: $0 REV [ROUNDS]" >&2; exit 2; }
REV=$1
ROUNDS=${2:-$DEFAULT_ROUNDS}
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "ROUNDS must be 1-99" >&2; exit 2; }
git rev-parse --verify --quiet "$REV^{commit}" >/dev/null || { echo "$REV is not a revision here" >&2; exit 2; }

SCRATCH=$(mktemp -d)
remove_scratch() {
    git worktree remove --force "$SCRATCH/other" >/dev/null 2>&1 || true
    rm -rf "$SCRATCH"
}
trap remove_scratch EXIT
git worktree add --detach "$SCRATCH/other" "$REV" >/dev/null
