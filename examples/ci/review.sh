#!/usr/bin/env bash
# Reviews the labs a pull request changes: validates and format-checks each lab, and writes the plan from
# the base commit's lab to this checkout's as Markdown, for one pull-request comment.
#
#     examples/ci/review.sh --base BASE_REV [--out FILE] LAB...
#
# Run it from inside the git checkout, with `bai` on PATH. LAB paths are relative to the current
# directory. The Markdown goes to FILE (default bai-review.md), starting with the line `<!-- bai-plan -->`
# so that a workflow can find its earlier comment and update it rather than add another.
#
# Exit status: 0 when every lab validates (warnings count as errors), is formatted and has a plan; 1 when
# any of that failed (the Markdown is written either way, saying what failed); 64 on a usage error.
#
# Nothing here touches a node: `bai validate`, `bai fmt --check` and `bai diff` read files only.
set -euo pipefail

readonly MARKER='<!-- bai-plan -->'

usage() { sed -n '2,13s/^# \{0,1\}//p' "$0"; }
die() {
    printf 'review.sh: %s\n' "$*" >&2
    exit 64
}

base='' out='bai-review.md' labs=()
while (($#)); do
    case $1 in
        --base) (($# >= 2)) || die "--base needs a revision"; base=$2; shift 2 ;;
        --base=*) base=${1#--base=}; shift ;;
        --out) (($# >= 2)) || die "--out needs a file"; out=$2; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; labs+=("$@"); break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) labs+=("$1"); shift ;;
    esac
done
[[ -n $base ]] || die "--base REV is required: the commit the pull request is compared with"
((${#labs[@]})) || die "name at least one lab file"
command -v bai >/dev/null || die "bai is not on PATH"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "run this inside the repository's checkout"
base_commit=$(git rev-parse --verify --quiet "$base^{commit}") \
    || die "$base is not a commit here; check out with full history (actions/checkout: fetch-depth: 0)"

export NO_COLOR=1
tmp=$(mktemp -d)
worktree="$tmp/base"
cleanup() {
    if [[ -d $worktree ]]; then git worktree remove --force "$worktree" >/dev/null 2>&1 || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# The base lab is a whole checkout of the base commit, not `git show BASE:LAB`: a lab `include`s other
# files and builds images from directories, and those must be the base commit's too.
needs_base=false
for lab in "${labs[@]}"; do
    [[ $lab != /* ]] || die "$lab: give lab paths relative to the checkout"
    if git cat-file -e "$base_commit:./$lab" 2>/dev/null; then needs_base=true; fi
done
if $needs_base; then
    git worktree add --quiet --detach "$worktree" "$base_commit"
fi
prefix=$(git rev-parse --show-prefix)
: >"$tmp/empty.kdl" # an empty file is a lab with no cluster: the plan creates (or deletes) everything

body="$tmp/body.md"
failed=false
{
    printf '%s\n' "$MARKER"
    printf '## bai: lab review\n\n'
    printf 'Plans from `%s` (base) to `%s`.\n' "$(git rev-parse --short "$base_commit")" \
        "$(git rev-parse --short HEAD)"
} >"$body"

# A fenced block of command output; four backticks so that backticks inside cannot close it.
fenced() {
    printf '\n````text\n%s\n````\n' "$1"
}

for lab in "${labs[@]}"; do
    printf 'review.sh: %s\n' "$lab" >&2
    old="$tmp/empty.kdl"
    if git cat-file -e "$base_commit:./$lab" 2>/dev/null; then old="$worktree/$prefix$lab"; fi
    new="$lab"
    {
        printf '\n## Lab `%s`\n\n' "$lab"
        [[ $old == "$tmp/empty.kdl" ]] && printf 'New in this pull request: the plan starts from an empty lab.\n\n'
    } >>"$body"

    if [[ ! -e $lab ]]; then
        # Deleted by the pull request: nothing to check, and the plan is every resource going away.
        printf 'Deleted in this pull request: the plan ends with an empty lab.\n\n' >>"$body"
        new="$tmp/empty.kdl"
    else
        if output=$(bai validate --deny-warnings --color never "$lab" 2>&1); then
            printf -- '- ✅ `bai validate --deny-warnings`\n' >>"$body"
        else
            failed=true
            { printf -- '- ❌ `bai validate --deny-warnings` failed:\n'; fenced "$output" | sed 's/^/  /'; } >>"$body"
        fi
        if output=$(bai fmt --check --color never "$lab" 2>&1); then
            printf -- '- ✅ `bai fmt --check`\n' >>"$body"
        else
            failed=true
            {
                printf -- '- ❌ `bai fmt --check` failed: run `bai fmt %s` and commit the result.\n' "$lab"
                fenced "$output" | sed 's/^/  /'
            } >>"$body"
        fi
        printf '\n' >>"$body"
    fi

    if plan=$(bai diff --color never --format markdown "$old" "$new" 2>"$tmp/diff.err"); then
        printf '%s\n' "$plan" >>"$body"
    else
        failed=true
        { printf '**No plan**: `bai diff` failed:\n'; fenced "$(cat "$tmp/diff.err")"; } >>"$body"
    fi
done

cp "$body" "$out"
printf 'review.sh: wrote %s\n' "$out" >&2
if $failed; then
    printf 'review.sh: some checks failed; %s says which\n' "$out" >&2
    exit 1
fi
