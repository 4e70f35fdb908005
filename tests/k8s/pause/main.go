//go:build k8s

// Command pause is the pod sandbox's process for the cluster test: the
// cluster is air-gapped, so containerd's sandbox image is built by the test
// from this program instead of pulled from registry.k8s.io. It waits for
// SIGTERM or SIGINT and exits.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
