package config

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(map[string]string{"FERRY_APP_ID": "billing", "HOSTNAME": "billing-7d9"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RedisURL != "redis://127.0.0.1:6379/0" || cfg.ListenAddr != "127.0.0.1:7400" || cfg.AdminAddr != ":7401" ||
		cfg.DeliveryConcurrency != 16 || cfg.RetryMaxAttempts != 10 || cfg.OutboxMaxBytes != 1<<30 ||
		cfg.Consumer != "billing-7d9" || cfg.SubscribeFrom != "earliest" || cfg.StreamMaxLen != 1000000 ||
		cfg.RedisMode != ModeStandalone || cfg.BreakerConsecutiveFailures != 5 || cfg.MetricsMaxTopics != 100 ||
		cfg.PubsubName != "pubsub" || cfg.AppSubscribe != "env" {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestSubscriptionsAreParsedOnce(t *testing.T) {
	cfg, err := Load(map[string]string{"FERRY_APP_ID": "b", "FERRY_SUBSCRIPTIONS": " orders=/o , invoices=/events/i"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Subscription{{"orders", "/o"}, {"invoices", "/events/i"}}
	if len(cfg.Subscriptions) != 2 || cfg.Subscriptions[0] != want[0] || cfg.Subscriptions[1] != want[1] {
		t.Fatalf("subscriptions: %+v", cfg.Subscriptions)
	}
	if got := cfg.Topics(); strings.Join(got, ",") != "orders,invoices" {
		t.Fatalf("topics: %v", got)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "FERRY_APP_ID"},
		{map[string]string{"FERRY_DELIVERY_TIMEOUT": "soon"}, "FERRY_DELIVERY_TIMEOUT"},
		{map[string]string{"FERRY_DELIVERY_CONCURRENCY": "many"}, "FERRY_DELIVERY_CONCURRENCY"},
		{map[string]string{"FERRY_DELIVERY_CONCURRENCY": "0"}, "FERRY_DELIVERY_CONCURRENCY"},
		{map[string]string{"FERRY_REDIS_URL": "http://x"}, "FERRY_REDIS_URL"},
		{map[string]string{"FERRY_SUBSCRIPTIONS": "orders"}, "FERRY_SUBSCRIPTIONS"},
		{map[string]string{"FERRY_SUBSCRIPTIONS": "orders=events"}, "FERRY_SUBSCRIPTIONS"},
		{map[string]string{"FERRY_SUBSCRIPTIONS": "-x=/a"}, "FERRY_SUBSCRIPTIONS"},
		{map[string]string{"FERRY_BREAKER_FAILURE_RATIO": "0"}, "FERRY_BREAKER_FAILURE_RATIO"},
		{map[string]string{"FERRY_BREAKER_FAILURE_RATIO": "1.5"}, "FERRY_BREAKER_FAILURE_RATIO"},
		{map[string]string{"FERRY_BREAKER_CONSECUTIVE_FAILURES": "-1"}, "FERRY_BREAKER_CONSECUTIVE_FAILURES"},
		{map[string]string{"FERRY_PUBLISH_RATE": "-1"}, "FERRY_PUBLISH_RATE"},
		{map[string]string{"FERRY_OUTBOX_MAX_BYTES": "0"}, "FERRY_OUTBOX_MAX_BYTES"},
		{map[string]string{"FERRY_SUBSCRIBE_FROM": "middle"}, "FERRY_SUBSCRIBE_FROM"},
		{map[string]string{"FERRY_LOG_FORMAT": "xml"}, "FERRY_LOG_FORMAT"},
		{map[string]string{"FERRY_REDIS_MODE": "ring"}, "FERRY_REDIS_MODE"},
		{map[string]string{"FERRY_REDIS_MODE": "sentinel"}, "FERRY_REDIS_URL"},
		{map[string]string{"FERRY_REDIS_URL": "redis://h:1?master_name=m"}, "FERRY_REDIS_MODE"},
		{map[string]string{"FERRY_REDIS_URL": "redis://h:1?addr=h2:2"}, "FERRY_REDIS_MODE"},
		{map[string]string{"FERRY_REDIS_MODE": "cluster", "FERRY_REDIS_URL": "redis://h:1/3"}, "FERRY_REDIS_URL"},
		{map[string]string{"FERRY_REDIS_WAIT_REPLICAS": "-1"}, "FERRY_REDIS_WAIT_REPLICAS"},
		{map[string]string{"FERRY_REDIS_WAIT_TIMEOUT": "0s"}, "FERRY_REDIS_WAIT_TIMEOUT"},
		{map[string]string{"FERRY_APP_HEALTH_PATH": "healthz"}, "FERRY_APP_HEALTH_PATH"},
		{map[string]string{"FERRY_APP_HEALTH_THRESHOLD": "0"}, "FERRY_APP_HEALTH_THRESHOLD"},
		{map[string]string{"FERRY_PUBLISH_TOPICS": "orders,bad topic"}, "FERRY_PUBLISH_TOPICS"},
		{map[string]string{"FERRY_METRICS_MAX_TOPICS": "0"}, "FERRY_METRICS_MAX_TOPICS"},
		{map[string]string{"FERRY_APP_SUBSCRIBE": "yaml"}, "FERRY_APP_SUBSCRIBE"},
		{map[string]string{"FERRY_PUBSUB_NAME": "a b"}, "FERRY_PUBSUB_NAME"},
	}
	for _, c := range cases {
		env := map[string]string{"FERRY_APP_ID": "billing"}
		if len(c.env) == 0 {
			env = map[string]string{}
		}
		for k, v := range c.env {
			env[k] = v
		}
		_, err := Load(env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to name %s", c.env, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "DeliveryTimeout") {
			t.Errorf("error names the Go field: %v", err)
		}
	}
}

func TestRedisURLPasswordNeverInErrors(t *testing.T) {
	_, err := Load(map[string]string{"FERRY_APP_ID": "a", "FERRY_REDIS_URL": "ftp://user:s3cret@host"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v", err)
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{
		"FERRY_APP_ID":              "a",
		"FERRY_API_TOKEN_FILE":      write("api", "api-secret\n"),
		"FERRY_APP_TOKEN_FILE":      write("app", "app-secret\r\n"),
		"FERRY_REDIS_PASSWORD_FILE": write("redis", "redis-secret"),
	}
	cfg, err := Load(env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIToken != "api-secret" || cfg.AdminToken != "api-secret" || cfg.AppToken != "app-secret" || cfg.RedisPassword != "redis-secret" {
		t.Fatalf("secrets: api %q admin %q app %q redis %q", cfg.APIToken, cfg.AdminToken, cfg.AppToken, cfg.RedisPassword)
	}
	if cfg.APITokenFile != "" || cfg.RedisPasswordFile != "" {
		t.Fatal("file contents kept twice")
	}
	// Sentinel: the URL's userinfo is the Sentinels' password, the file the
	// data nodes': both may be set.
	sentinel := map[string]string{"FERRY_APP_ID": "a", "FERRY_REDIS_MODE": "sentinel",
		"FERRY_REDIS_URL": "redis://:sentinel-pw@s:26379?master_name=m", "FERRY_REDIS_PASSWORD_FILE": write("r4", "data-pw")}
	if cfg, err := Load(sentinel); err != nil || cfg.RedisPassword != "data-pw" {
		t.Fatalf("sentinel with both passwords: %q, %v", cfg.RedisPassword, err)
	}
	env["FERRY_ADMIN_TOKEN_FILE"] = write("admin", "admin-secret\n")
	if cfg, err = Load(env); err != nil || cfg.AdminToken != "admin-secret" || cfg.APIToken != "api-secret" {
		t.Fatalf("admin token: %q, %v", cfg.AdminToken, err)
	}

	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"FERRY_API_TOKEN": "x", "FERRY_API_TOKEN_FILE": write("a2", "y")}, "FERRY_API_TOKEN_FILE"},
		{map[string]string{"FERRY_ADMIN_TOKEN_FILE": filepath.Join(dir, "missing")}, "FERRY_ADMIN_TOKEN_FILE"},
		{map[string]string{"FERRY_APP_TOKEN_FILE": dir}, "FERRY_APP_TOKEN_FILE"},
		{map[string]string{"FERRY_APP_TOKEN_FILE": write("empty", "\n")}, "FERRY_APP_TOKEN_FILE"},
		{map[string]string{"FERRY_REDIS_URL": "redis://:pw@h:1/0", "FERRY_REDIS_PASSWORD_FILE": write("r2", "hidden-pw")}, "FERRY_REDIS_PASSWORD_FILE"},
		// Sentinel: ?password= is the data nodes' password, as the file is.
		{map[string]string{"FERRY_REDIS_MODE": "sentinel", "FERRY_REDIS_URL": "redis://s:26379?master_name=m&password=pw",
			"FERRY_REDIS_PASSWORD_FILE": write("r3", "hidden-pw")}, "FERRY_REDIS_PASSWORD_FILE"},
	} {
		c.env["FERRY_APP_ID"] = "a"
		_, err := Load(c.env)
		if err == nil || !strings.HasPrefix(err.Error(), c.want+":") {
			t.Errorf("%v: error %v, want it to name %s", c.env, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "hidden-pw") || strings.Contains(err.Error(), "secret")) {
			t.Errorf("error shows a secret: %v", err)
		}
	}
}

func TestPublishTopicPatterns(t *testing.T) {
	cfg, err := Load(map[string]string{"FERRY_APP_ID": "a", "FERRY_PUBLISH_TOPICS": "orders, invoices.*"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.PublishTopics, "|") != "orders|invoices.*" {
		t.Fatalf("patterns: %q", cfg.PublishTopics)
	}
}

func TestBurst(t *testing.T) {
	for _, c := range []struct {
		rate  float64
		burst int
		want  int
	}{{0.5, 0, 1}, {20, 0, 20}, {2.1, 0, 3}, {20, 7, 7}} {
		if got := Burst(c.rate, c.burst); got != c.want {
			t.Errorf("Burst(%v, %d) = %d, want %d", c.rate, c.burst, got, c.want)
		}
	}
}

func FuzzLoadConfig(f *testing.F) {
	f.Add("billing", "redis://:s3cret-password@127.0.0.1:6379/0", "orders=/events/orders", "1048576", "10s", "0.5", "info", "127.0.0.1:7400")
	f.Add("", "http://x", "orders", "-1", "ten", "2", "loud", "")
	f.Add("bad app", "redis://%zz", "a=b,,=/c", "1e9", "-5s", "NaN", "DEBUG", ":0")
	f.Add("x", "rediss://u:p@h/0", "a=/b,a=/c", "99999999999999999999", "0", "0", "warn", "127.0.0.1:0")
	f.Fuzz(func(t *testing.T, appID, redisURL, subs, maxBody, timeout, ratio, level, listen string) {
		env := map[string]string{
			"FERRY_APP_ID":                appID,
			"FERRY_REDIS_URL":             redisURL,
			"FERRY_SUBSCRIPTIONS":         subs,
			"FERRY_MAX_BODY_BYTES":        maxBody,
			"FERRY_DELIVERY_TIMEOUT":      timeout,
			"FERRY_BREAKER_FAILURE_RATIO": ratio,
			"FERRY_LOG_LEVEL":             level,
			"FERRY_LISTEN_ADDR":           listen,
			"HOSTNAME":                    "fuzz-0",
		}
		_, err := Load(env)
		if err == nil {
			return
		}
		var leaves []error
		var walk func(error)
		walk = func(e error) {
			if j, ok := e.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					walk(e)
				}
				return
			}
			leaves = append(leaves, e)
		}
		walk(err)
		for _, e := range leaves {
			var ve *VarError
			if !errors.As(e, &ve) || !strings.HasPrefix(ve.Var, Prefix) || !strings.HasPrefix(e.Error(), Prefix) {
				t.Fatalf("error %q (%T) does not name a FERRY_ variable", e, e)
			}
		}
		// The Redis password never shows in an error.
		if u, perr := url.Parse(redisURL); perr == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && len(pw) >= 8 {
				others := appID + subs + maxBody + timeout + ratio + level + listen
				if strings.Contains(err.Error(), pw) && !strings.Contains(others, pw) {
					t.Fatalf("error shows the Redis password: %v", err)
				}
			}
		}
	})
}
