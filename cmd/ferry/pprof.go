//go:build ferrypprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

// A build with -tags ferrypprof (go run ./bench -cpuprofile DIR makes one)
// serves net/http/pprof on FERRY_PPROF_ADDR. Release builds have no such
// listener: profiling endpoints do not belong on a production sidecar.
func init() {
	if addr := os.Getenv("FERRY_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
