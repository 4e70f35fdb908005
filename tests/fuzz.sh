#!/usr/bin/env bash
# Runs every Go fuzz target of the module for FUZZTIME each, one after the
# other (make fuzz, make fuzz-smoke). Fails when a target fails, and names the
# target, the failing input written under the package's testdata/fuzz/ (with
# its contents, for a CI clone that is thrown away) and the command that
# replays it.
#
# The targets are read from the source, not listed here, so a new one runs
# without editing anything: the packages whose _test.go files declare a
# `func Fuzz...`, then `go test -list '^Fuzz'` in those packages (what go
# test itself takes for a fuzz target, with the build tags it uses).
#
#   tests/fuzz.sh FUZZTIME [go test flags, e.g. -parallel 2]
#   FUZZ_MATCH=REGEXP limits the targets to those whose "package.Target"
#   (e.g. "loader.FuzzTupleStamps") matches.
#   FUZZ_KEEP=1 copies, after each target, the inputs the fuzzer found
#   interesting (kept only in its cache, $(go env GOCACHE)/fuzz/<package>/<Target>)
#   that the package's testdata/fuzz/<Target>/ does not hold yet (by content),
#   so that a long run's inputs can be committed as seeds. Off by default: the
#   cache holds every earlier run's inputs too, and CI must not write the tree.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
fuzztime=${1:?usage: tests/fuzz.sh FUZZTIME [go test flags]}
shift

# Packages of this module with a fuzz target (a directory of a nested
# module, which has a go.mod of its own, is an error for go list here and is
# left out).
mapfile -t dirs < <(git grep --untracked -l -E '^func Fuzz[A-Z0-9_]' -- '*_test.go' | xargs -r -n1 dirname | sort -u | sed 's|^|./|')
mapfile -t pkgs < <([ ${#dirs[@]} -eq 0 ] || $GO list -e -f '{{if and .Module .Module.Main (not .Error)}}{{.ImportPath}}{{end}}' "${dirs[@]}" | sed '/^$/d')
if [ ${#pkgs[@]} -eq 0 ]; then
	echo "fuzz: no fuzz target found (looked for 'func Fuzz' in *_test.go)" >&2
	exit 1
fi

# go test -list prints a package's matching names, then "ok  <import path>".
list=$($GO test -list '^Fuzz' "${pkgs[@]}") || { echo "$list"; echo "fuzz: go test -list failed" >&2; exit 1; }
targets=()
names=()
while read -r first second _; do
	case $first in
	Fuzz*) names+=("$first") ;;
	ok)
		for n in "${names[@]}"; do targets+=("$second $n"); done
		names=()
		;;
	esac
done <<<"$list"
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: go test -list found no fuzz target in ${pkgs[*]}" >&2
	exit 1
fi

module=$($GO list -m)

# keep PKG NAME SHORT: FUZZ_KEEP's copy of the cached inputs of one target.
keep() {
	local cache dir dst f sum n=0
	local -A have=()
	cache=$($GO env GOCACHE)/fuzz/$1/$2
	dir=$($GO list -f '{{.Dir}}' "$1")
	dst=$dir/testdata/fuzz/$2
	if ! [ -d "$cache" ]; then
		echo "fuzz: FUZZ_KEEP: no cached inputs of $3 ($cache)"
		return
	fi
	mkdir -p "$dst"
	for f in "$dst"/*; do
		[ -f "$f" ] && have[$(sha256sum <"$f" | cut -c1-64)]=1
	done
	for f in "$cache"/*; do
		[ -f "$f" ] || continue
		sum=$(sha256sum <"$f" | cut -c1-64)
		[ -n "${have[$sum]:-}" ] && continue
		have[$sum]=1
		cp "$f" "$dst/" && n=$((n + 1))
	done
	echo "fuzz: FUZZ_KEEP: $n new inputs of $3 copied from $cache to ${dst#"$PWD"/}"
}
failed=()
ran=0
for t in "${targets[@]}"; do
	pkg=${t% *} name=${t#* }
	short=${pkg#"$module"/}.$name # loader.FuzzTupleStamps: what FUZZ_MATCH and the messages name
	if [ -n "${FUZZ_MATCH:-}" ] && ! [[ $short =~ $FUZZ_MATCH ]]; then
		continue
	fi
	ran=$((ran + 1))
	echo "== fuzz $short for $fuzztime"
	out=$(mktemp)
	ok=
	for attempt in 1 2; do
		if $GO test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" "$@" "$pkg" 2>&1 | tee "$out"; then
			ok=1
			break
		fi
		# Go's fuzzing coordinator (up to Go 1.26) may report the end of
		# -fuzztime itself as a failure, "context deadline exceeded" with no
		# failing input (golang/go#75804). That alone, once, is run again;
		# twice in a row, or with anything else, is a failure.
		if [ $attempt = 2 ] || grep -q 'Failing input written to' "$out" ||
			[ "$(grep -c -v -E '^(fuzz: elapsed: |warning: starting with empty corpus$|--- FAIL: '"$name"' |[[:space:]]*context deadline exceeded$|FAIL$|exit status 1$|FAIL[[:space:]])' "$out")" != 0 ] ||
			! grep -q -E '^[[:space:]]*context deadline exceeded$' "$out"; then
			break
		fi
		echo "fuzz: $short stopped with 'context deadline exceeded' and no failing input: Go's fuzzing coordinator at the end of -fuzztime (golang/go#75804); running it again once"
	done
	if [ "${FUZZ_KEEP:-0}" != 0 ]; then
		keep "$pkg" "$name" "$short"
	fi
	if [ -n "$ok" ]; then
		rm -f "$out"
		continue
	fi
	input=$(sed -n 's/^[[:space:]]*Failing input written to //p' "$out" | tail -n1)
	rm -f "$out"
	if [ -n "$input" ]; then
		dir=$($GO list -f '{{.Dir}}' "$pkg")
		file=${dir#"$PWD"/}/$input
		echo "-- failing input $file:"
		head -c 4096 "$file"
		echo
		failed+=("$short: failing input $file; replay: go test -run '^$name/$(basename "$input")\$' ./${dir#"$PWD"/}")
	else
		failed+=("$short: failed without writing an input (a seed failed, or the build): see its output above")
	fi
done

if [ $ran -eq 0 ]; then
	echo "fuzz: FUZZ_MATCH='${FUZZ_MATCH:-}' matches none of: ${targets[*]}" >&2
	exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $ran targets failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz: $ran targets ran $fuzztime each, no failure"
