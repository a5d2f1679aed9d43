package sidecar

import "os"

func osEnviron() []string { return os.Environ() }

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "ferry"
	}
	return h
}
