#!/bin/sh
# bpf2go.sh ARGS... -- CFLAGS...: go tool bpf2go with the include directory
# of the host appended to the C flags (the go:generate line must end with
# `-- CFLAGS`). The kernel's uapi headers include <asm/types.h>, which Debian
# installs in the multiarch directory of the host (x86_64-linux-gnu,
# aarch64-linux-gnu): dpkg-architecture names it (uname -m on systems
# without dpkg-dev). The objects are bpfel whatever the host, and identical
# on every host.
set -e
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
exec go tool bpf2go "$@" -I"/usr/include/$multiarch"
