package adminclient

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		":7401": "127.0.0.1:7401", "0.0.0.0:9": "127.0.0.1:9", "[::]:7401": "[::1]:7401",
		"127.0.0.1:7401": "127.0.0.1:7401", "ferry.local:80": "ferry.local:80", "[::1]:5": "[::1]:5",
	} {
		if got, err := DialAddr(in); err != nil || got != want {
			t.Errorf("DialAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"7401", "", "http://x:1"} {
		if _, err := DialAddr(bad); err == nil {
			t.Errorf("DialAddr(%q): no error", bad)
		}
	}
}

func TestFromEnv(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(file, []byte("from-file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		env             map[string]string
		addr, tok, from string
		badVar          string
	}{
		{env: map[string]string{}, addr: "127.0.0.1:7401"},
		{env: map[string]string{"FERRY_ADMIN_ADDR": "[::]:1", "FERRY_API_TOKEN": "api"}, addr: "[::1]:1", tok: "api", from: "FERRY_API_TOKEN"},
		{env: map[string]string{"FERRY_ADMIN_TOKEN": "adm", "FERRY_API_TOKEN": "api"}, addr: "127.0.0.1:7401", tok: "adm", from: "FERRY_ADMIN_TOKEN"},
		{env: map[string]string{"FERRY_ADMIN_TOKEN_FILE": file, "FERRY_API_TOKEN": "api"}, addr: "127.0.0.1:7401", tok: "from-file", from: "FERRY_ADMIN_TOKEN"},
		{env: map[string]string{"FERRY_API_TOKEN_FILE": file}, addr: "127.0.0.1:7401", tok: "from-file", from: "FERRY_API_TOKEN"},
		{env: map[string]string{"FERRY_API_TOKEN_FILE": file, "FERRY_API_TOKEN": "x"}, badVar: "FERRY_API_TOKEN_FILE"},
		{env: map[string]string{"FERRY_ADMIN_TOKEN_FILE": file + ".missing"}, badVar: "FERRY_ADMIN_TOKEN_FILE"},
		{env: map[string]string{"FERRY_ADMIN_ADDR": "7401"}, badVar: "FERRY_ADMIN_ADDR"},
	}
	for _, c := range cases {
		o, err := FromEnv(func(k string) string { return c.env[k] })
		if c.badVar != "" {
			var cerr *ConfigError
			if !errors.As(err, &cerr) || cerr.Var != c.badVar {
				t.Errorf("%v: err %v, want a ConfigError naming %s", c.env, err, c.badVar)
			}
			continue
		}
		if err != nil || o.Addr != c.addr || o.Token != c.tok || o.TokenVar != c.from {
			t.Errorf("%v: %+v, %v; want addr %s token %q from %s", c.env, o, err, c.addr, c.tok, c.from)
		}
	}
}
