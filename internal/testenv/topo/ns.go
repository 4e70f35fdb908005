package topo

import "github.com/ipng/ipng-stats/internal/testenv"

// NS is a network namespace of the topology; see testenv.NS.
type NS = testenv.NS
