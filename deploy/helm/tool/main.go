// Command tool lints the ipng-stats chart with Helm's own linter and renders
// it into the plain manifest, deploy/kubernetes/ipng-stats.yaml, with Helm's
// Go API (no helm binary). `make chart` writes the manifest; `make
// check-generated` fails when the committed one is stale.
//
//	go run . -chart ../ipng-stats -out ../../kubernetes/ipng-stats.yaml
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	chartDir := flag.String("chart", "../ipng-stats", "chart `DIR`")
	out := flag.String("out", "../../kubernetes/ipng-stats.yaml", "manifest `FILE` to write; \"-\": stdout")
	flag.Parse()
	if err := lintChart(*chartDir, nil); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		os.Exit(1)
	}
	manifest, err := plainManifest(*chartDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		os.Exit(1)
	}
	if *out == "-" {
		fmt.Print(manifest)
		return
	}
	if err := os.WriteFile(*out, []byte(manifest), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		os.Exit(1)
	}
}
