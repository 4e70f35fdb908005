// Command ipng-stats-image assembles the container image of the agent from
// the static binary alone: no base image, no registry, no container engine.
// It writes an OCI image layout (a directory, and the same as a tar archive
// that `ctr images import` and `podman load` read), byte for byte the same
// for the same binary and inputs. `make image` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.Binary, "binary", "ipng-stats", "static ipng-stats `FILE` to put at /usr/bin/ipng-stats")
	flag.StringVar(&o.Layout, "layout", "build/image", "OCI image layout `DIR` to write (replaced)")
	flag.StringVar(&o.Archive, "archive", "build/ipng-stats-image.tar", "tar `FILE` of the layout; empty: none")
	flag.StringVar(&o.Name, "name", "ipng-stats", "image name, without tag")
	flag.StringVar(&o.Version, "version", "dev", "version of the binary: org.opencontainers.image.version, and the tag unless -tag is given")
	flag.StringVar(&o.Tag, "tag", "", "image tag (default: -version); make image gives the chart's appVersion, the tag its manifests name")
	flag.StringVar(&o.Revision, "revision", "", "source revision (org.opencontainers.image.revision)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "architecture of the binary")
	epoch := flag.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "creation time in seconds since the epoch (default $SOURCE_DATE_EPOCH, else 0)")
	flag.Parse()
	if *epoch != "" {
		secs, err := strconv.ParseInt(*epoch, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ipng-stats-image: -created %q: %v\n", *epoch, err)
			os.Exit(2)
		}
		o.Created = time.Unix(secs, 0).UTC()
	} else {
		o.Created = time.Unix(0, 0).UTC()
	}
	digest, err := build(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ipng-stats-image: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s:%s %s\n", o.Name, o.tag(), digest)
}
