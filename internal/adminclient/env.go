package adminclient

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// DefaultAddr is FERRY_ADMIN_ADDR's default, as the sidecar reads it.
const DefaultAddr = ":7401"

// ConfigError is a problem with the environment the client reads; Var names
// the variable.
type ConfigError struct {
	Var string
	Msg string
}

// Error names the variable and the problem.
func (e *ConfigError) Error() string { return e.Var + ": " + e.Msg }

// FromEnv builds the client settings from the sidecar's own variables,
// looked up with getenv (os.Getenv when nil):
//
//   - the address from FERRY_ADMIN_ADDR (default ":7401"); a listen address
//     with no host, 0.0.0.0 or :: is dialled on loopback;
//   - the token from FERRY_ADMIN_TOKEN or FERRY_ADMIN_TOKEN_FILE, else
//     FERRY_API_TOKEN or FERRY_API_TOKEN_FILE (the sidecar's fallback). A
//     file's content is the token without its trailing newline. A
//     variable and its _FILE both set, or an unreadable file, is a
//     *ConfigError, as it is for the sidecar.
func FromEnv(getenv func(string) string) (Options, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	addr := getenv("FERRY_ADMIN_ADDR")
	if addr == "" {
		addr = DefaultAddr
	}
	dial, err := DialAddr(addr)
	if err != nil {
		return Options{}, &ConfigError{Var: "FERRY_ADMIN_ADDR", Msg: err.Error()}
	}
	opts := Options{Addr: dial}
	for _, name := range []string{"FERRY_ADMIN_TOKEN", "FERRY_API_TOKEN"} {
		tok, err := secret(getenv, name)
		if err != nil {
			return Options{}, err
		}
		if tok != "" {
			opts.Token, opts.TokenVar = tok, name
			break
		}
	}
	return opts, nil
}

// secret reads name or name_FILE.
func secret(getenv func(string) string, name string) (string, error) {
	val, file := getenv(name), getenv(name+"_FILE")
	switch {
	case val != "" && file != "":
		return "", &ConfigError{Var: name + "_FILE", Msg: fmt.Sprintf("set either %s or %s_FILE, not both", name, name)}
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", &ConfigError{Var: name + "_FILE", Msg: fmt.Sprintf("read token file: %v", err)}
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return val, nil
}

// DialAddr turns a listen address into one to dial: an empty host, 0.0.0.0
// or :: (listen on every interface) becomes loopback.
func DialAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("parse address %q: want host:port or :port", listen)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}
