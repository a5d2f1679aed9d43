package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Prefix is the prefix of every ferry environment variable.
const Prefix = "FERRY_"

// Redis connection modes (FERRY_REDIS_MODE).
const (
	ModeStandalone = "standalone"
	ModeCluster    = "cluster"
	ModeSentinel   = "sentinel"
)

// Config is ferry's whole configuration, read from FERRY_* variables.
// DESIGN.md's table says what each means.
type Config struct {
	AppID             string        `env:"APP_ID,required"`
	RedisURL          string        `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	RedisMode         string        `env:"REDIS_MODE" envDefault:"standalone"`
	RedisWaitReplicas int           `env:"REDIS_WAIT_REPLICAS" envDefault:"0"`
	RedisWaitTimeout  time.Duration `env:"REDIS_WAIT_TIMEOUT" envDefault:"2s"`
	ListenAddr        string        `env:"LISTEN_ADDR" envDefault:"127.0.0.1:7400"`
	AdminAddr         string        `env:"ADMIN_ADDR" envDefault:":7401"`
	AppURL            string        `env:"APP_URL" envDefault:"http://127.0.0.1:8080"`
	// SubscriptionList is the raw `topic=/route,…` text; Load parses it into Subscriptions.
	SubscriptionList string `env:"SUBSCRIPTIONS"`

	OutboxDir      string `env:"OUTBOX_DIR" envDefault:"./data/outbox"`
	OutboxMaxBytes int64  `env:"OUTBOX_MAX_BYTES" envDefault:"1073741824"`
	MaxBodyBytes   int64  `env:"MAX_BODY_BYTES" envDefault:"1048576"`

	DeliveryTimeout     time.Duration `env:"DELIVERY_TIMEOUT" envDefault:"10s"`
	DeliveryConcurrency int           `env:"DELIVERY_CONCURRENCY" envDefault:"16"`
	DeliveryRate        float64       `env:"DELIVERY_RATE" envDefault:"0"`
	DeliveryBurst       int           `env:"DELIVERY_BURST" envDefault:"0"`
	PublishRate         float64       `env:"PUBLISH_RATE" envDefault:"0"`
	PublishBurst        int           `env:"PUBLISH_BURST" envDefault:"0"`

	RetryMaxAttempts     int           `env:"RETRY_MAX_ATTEMPTS" envDefault:"10"`
	RetryInitialInterval time.Duration `env:"RETRY_INITIAL_INTERVAL" envDefault:"200ms"`
	RetryMaxInterval     time.Duration `env:"RETRY_MAX_INTERVAL" envDefault:"30s"`

	BreakerFailureRatio        float64       `env:"BREAKER_FAILURE_RATIO" envDefault:"0.5"`
	BreakerMinRequests         int           `env:"BREAKER_MIN_REQUESTS" envDefault:"20"`
	BreakerOpenTimeout         time.Duration `env:"BREAKER_OPEN_TIMEOUT" envDefault:"30s"`
	BreakerConsecutiveFailures int           `env:"BREAKER_CONSECUTIVE_FAILURES" envDefault:"5"`

	AppHealthPath      string        `env:"APP_HEALTH_PATH"`
	AppHealthInterval  time.Duration `env:"APP_HEALTH_INTERVAL" envDefault:"1s"`
	AppHealthThreshold int           `env:"APP_HEALTH_THRESHOLD" envDefault:"3"`

	// PublishTopicList is the raw FERRY_PUBLISH_TOPICS; Load parses it into PublishTopics.
	PublishTopicList string `env:"PUBLISH_TOPICS"`
	MetricsMaxTopics int    `env:"METRICS_MAX_TOPICS" envDefault:"100"`

	DedupeTTL   time.Duration `env:"DEDUPE_TTL" envDefault:"24h"`
	DedupeLease time.Duration `env:"DEDUPE_LEASE" envDefault:"30s"`
	ClaimIdle   time.Duration `env:"CLAIM_IDLE" envDefault:"60s"`

	APIToken          string `env:"API_TOKEN"`
	APITokenFile      string `env:"API_TOKEN_FILE,file"`
	AdminToken        string `env:"ADMIN_TOKEN"`
	AdminTokenFile    string `env:"ADMIN_TOKEN_FILE,file"`
	AppToken          string `env:"APP_TOKEN"`
	AppTokenFile      string `env:"APP_TOKEN_FILE,file"`
	RedisPasswordFile string `env:"REDIS_PASSWORD_FILE,file"`
	RedisCAFile       string `env:"REDIS_CA_FILE"`
	RedisCertFile     string `env:"REDIS_CERT_FILE"`
	RedisKeyFile      string `env:"REDIS_KEY_FILE"`

	SubscribeFrom  string        `env:"SUBSCRIBE_FROM" envDefault:"earliest"`
	StreamMaxLen   int64         `env:"STREAM_MAX_LEN" envDefault:"1000000"`
	StreamMaxAge   time.Duration `env:"STREAM_MAX_AGE" envDefault:"0"`
	LogLevel       string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat      string        `env:"LOG_FORMAT" envDefault:"json"`
	ShutdownBudget time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`

	PubsubName   string `env:"PUBSUB_NAME" envDefault:"pubsub"`
	AppSubscribe string `env:"APP_SUBSCRIBE" envDefault:"env"`

	// Consumer is this replica's consumer name: HOSTNAME (the pod name), not a FERRY_ variable.
	Consumer string `env:"-"`
	// Subscriptions is SubscriptionList parsed (by Load).
	Subscriptions []Subscription `env:"-"`
	// PublishTopics is PublishTopicList parsed (by Load); empty allows any topic.
	PublishTopics []string `env:"-"`
	// RedisPassword is the contents of FERRY_REDIS_PASSWORD_FILE, trimmed.
	RedisPassword string `env:"-"`
}

// Subscription is one `topic=/route` entry of FERRY_SUBSCRIPTIONS.
type Subscription struct {
	Topic string
	Route string
}

// VarError is a configuration problem; Var names the environment variable.
type VarError struct {
	Var string
	Err error
}

func (e *VarError) Error() string { return fmt.Sprintf("%s: %v", e.Var, e.Err) }
func (e *VarError) Unwrap() error { return e.Err }

// Topics lists the subscribed topics.
func (c Config) Topics() []string {
	out := make([]string, len(c.Subscriptions))
	for i, s := range c.Subscriptions {
		out[i] = s.Topic
	}
	return out
}

// Load reads the configuration from environ (nil ⇒ the process
// environment), reads the *_FILE secrets and validates everything. Every
// error names its FERRY_ variable.
func Load(environ map[string]string) (Config, error) {
	if environ == nil {
		environ = env.ToMap(os.Environ())
	}
	opts := env.Options{Prefix: Prefix, Environment: environ}
	cfg, err := env.ParseAsWithOptions[Config](opts)
	if err != nil {
		return Config{}, renameEnvError(err)
	}
	cfg.Consumer = environ["HOSTNAME"]
	if cfg.Consumer == "" {
		cfg.Consumer = hostname()
	}
	if err := cfg.resolveSecrets(environ); err != nil {
		return Config{}, err
	}
	cfg.Subscriptions, _ = ParseSubscriptions(cfg.SubscriptionList)
	cfg.PublishTopics, _ = parseTopicPatterns(cfg.PublishTopicList)
	return cfg, cfg.Validate()
}

// resolveSecrets applies the *_FILE variables: a variable and its _FILE
// both set is an error; a file's trailing newline is trimmed. The admin
// token defaults to the API token.
func (c *Config) resolveSecrets(environ map[string]string) error {
	var errs []error
	pick := func(name string, value *string, fromFile string) {
		_, fileSet := environ[Prefix+name+"_FILE"]
		if !fileSet {
			return
		}
		if v, set := environ[Prefix+name]; set && v != "" {
			errs = append(errs, &VarError{Var: Prefix + name + "_FILE", Err: fmt.Errorf("set together with %s%s: use one of them", Prefix, name)})
			return
		}
		*value = strings.TrimRight(fromFile, "\r\n")
		if *value == "" {
			errs = append(errs, &VarError{Var: Prefix + name + "_FILE", Err: errors.New("the file is empty")})
		}
	}
	pick("API_TOKEN", &c.APIToken, c.APITokenFile)
	pick("ADMIN_TOKEN", &c.AdminToken, c.AdminTokenFile)
	pick("APP_TOKEN", &c.AppToken, c.AppTokenFile)
	pick("REDIS_PASSWORD", &c.RedisPassword, c.RedisPasswordFile)
	c.APITokenFile, c.AdminTokenFile, c.AppTokenFile, c.RedisPasswordFile = "", "", "", "" // contents, not paths: keep one copy
	if c.AdminToken == "" {
		c.AdminToken = c.APIToken
	}
	return errors.Join(errs...)
}

// renameEnvError rewrites caarlos0/env errors, which name the Go field, so
// that they name the FERRY_ variable instead.
func renameEnvError(err error) error {
	fields := map[string]string{} // Go field name → FERRY_ variable
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" && name != "-" {
			fields[f.Name] = Prefix + name
		}
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		var ns env.VarIsNotSetError
		var ev env.EmptyVarError
		var fe env.LoadFileContentError
		switch {
		case errors.As(e, &pe):
			out = append(out, &VarError{Var: fields[pe.Name], Err: fmt.Errorf("not a valid %s: %v", pe.Type, errors.Unwrap(e))})
		case errors.As(e, &ns):
			out = append(out, &VarError{Var: ns.Key, Err: errors.New("required but not set")})
		case errors.As(e, &ev):
			out = append(out, &VarError{Var: ev.Key, Err: errors.New("must not be empty")})
		case errors.As(e, &fe):
			out = append(out, &VarError{Var: fe.Key, Err: fmt.Errorf("cannot read the file: %w", fe.Err)})
		default:
			out = append(out, e)
		}
	}
	return errors.Join(out...)
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "ferry"
	}
	return h
}

// Burst is a token bucket's size: burst, or max(1, ⌈rate⌉) when burst is 0.
func Burst(rate float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return max(1, int(math.Ceil(rate)))
}
