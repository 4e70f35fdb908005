package ipngstats_test

import (
	"log"
	"net/http"

	"github.com/ipng/ipng-stats/ipngstats"
)

// A complete server: static files on :8080, counted per (source_tag, vip,
// code) with the bindings of the agent's configuration file, and the counts
// on :9114/metrics (the agent, if it runs on the host, has :9113).
func Example() {
	acct, err := ipngstats.Load("/etc/ipng-stats/ipng-stats.yml")
	if err != nil {
		log.Fatal(err)
	}
	go http.ListenAndServe(":9114", acct.MetricsHandler())
	srv := &http.Server{Addr: ":8080", Handler: http.FileServer(http.Dir("/var/www"))}
	log.Fatal(acct.ListenAndServe(srv))
}
