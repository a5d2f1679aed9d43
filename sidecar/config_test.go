package sidecar

import (
	"strings"
	"testing"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig(map[string]string{"FERRY_APP_ID": "billing", "HOSTNAME": "billing-7d9"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RedisURL != "redis://127.0.0.1:6379/0" || cfg.ListenAddr != "127.0.0.1:7400" || cfg.AdminAddr != ":7401" ||
		cfg.DeliveryConcurrency != 16 || cfg.RetryMaxAttempts != 10 || cfg.OutboxMaxBytes != 1<<30 ||
		cfg.Consumer != "billing-7d9" || cfg.SubscribeFrom != "earliest" || cfg.StreamMaxLen != 1000000 {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
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
		{map[string]string{"FERRY_PUBLISH_RATE": "-1"}, "FERRY_PUBLISH_RATE"},
		{map[string]string{"FERRY_OUTBOX_MAX_BYTES": "0"}, "FERRY_OUTBOX_MAX_BYTES"},
		{map[string]string{"FERRY_SUBSCRIBE_FROM": "middle"}, "FERRY_SUBSCRIBE_FROM"},
		{map[string]string{"FERRY_LOG_FORMAT": "xml"}, "FERRY_LOG_FORMAT"},
	}
	for _, c := range cases {
		env := map[string]string{"FERRY_APP_ID": "billing"}
		if len(c.env) == 0 {
			env = map[string]string{}
		}
		for k, v := range c.env {
			env[k] = v
		}
		_, err := LoadConfig(env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to name %s", c.env, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "DeliveryTimeout") {
			t.Errorf("error names the Go field: %v", err)
		}
	}
}

func TestRedisURLPasswordNeverInErrors(t *testing.T) {
	_, err := LoadConfig(map[string]string{"FERRY_APP_ID": "a", "FERRY_REDIS_URL": "ftp://user:s3cret@host"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v", err)
	}
	if got := redactURL("redis://user:s3cret@host:6379/0"); strings.Contains(got, "s3cret") {
		t.Errorf("redactURL kept the password: %s", got)
	}
}
