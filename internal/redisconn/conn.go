package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/ferry-sidecar/ferry/retry"
)

// Modes of Options.Mode.
const (
	Standalone = "standalone"
	Cluster    = "cluster"
	Sentinel   = "sentinel"
)

// Backoff paces retries of anything that waits for Redis to come back.
var Backoff = retry.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, MaxAttempts: 1 << 30}

// Options say how to reach Redis. Zero values: standalone mode, no TLS
// files, the URL's own password.
type Options struct {
	URL  string // redis:// or rediss://, in the go-redis form of Mode
	Mode string // Standalone (""), Cluster or Sentinel
	// Password is used for the data nodes instead of the URL's
	// (FERRY_REDIS_PASSWORD_FILE). In Sentinel mode the URL's userinfo is
	// the Sentinels' password and the data nodes' comes from
	// ?username=&password= (go-redis ParseFailoverURL): Password replaces
	// the latter, the one ferry stores data with.
	Password string
	CAFile   string // private CA for rediss://
	CertFile string // client certificate (with KeyFile)
	KeyFile  string
	PoolSize int // at least this many connections per node; 0: go-redis default
	// WaitTimeout is the longest a WAIT may block (FERRY_REDIS_WAIT_TIMEOUT):
	// the read timeout is raised to at least WaitTimeout+1s, or a WAIT that
	// blocks its full time would time the pipeline out and go-redis would
	// send the whole pipeline again.
	WaitTimeout time.Duration
}

// ReadTimeout is the read timeout of every connection: 5 s, or the wait
// timeout plus one second when that is longer.
func (o Options) ReadTimeout() time.Duration {
	return max(5*time.Second, o.WaitTimeout+time.Second)
}

// OptionError names the option (a field of Options) that is wrong.
type OptionError struct {
	Option string
	Err    error
}

func (e *OptionError) Error() string { return e.Option + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

// New builds the client. Errors never contain the URL: it may hold a password.
func New(o Options) (redis.UniversalClient, error) {
	switch o.Mode {
	case "", Standalone:
		opts, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, badURL(Standalone)
		}
		if err := configureTLS(opts.TLSConfig, o); err != nil {
			return nil, err
		}
		o.applyTo(&opts.Password, &opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.MaxRetries, &opts.PoolSize)
		opts.MaintNotificationsConfig = noMaintNotifications()
		return redis.NewClient(opts), nil
	case Cluster:
		opts, err := redis.ParseClusterURL(o.URL)
		if err != nil {
			return nil, badURL(Cluster)
		}
		if err := configureTLS(opts.TLSConfig, o); err != nil {
			return nil, err
		}
		o.applyTo(&opts.Password, &opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.MaxRetries, &opts.PoolSize)
		opts.MaintNotificationsConfig = noMaintNotifications()
		opts.MaxRedirects = 8 // a failover or reshard moves slots: follow MOVED/ASK further than the default 3
		// go-redis reloads the slot map on MOVED/ASK, otherwise every 60 s by
		// default: after a master died, commands for its slots kept failing
		// for 8–12 s. The reload is one CLUSTER SLOTS per second.
		opts.ClusterStateReloadInterval = time.Second
		return redis.NewClusterClient(opts), nil
	case Sentinel:
		opts, err := redis.ParseFailoverURL(o.URL)
		if err != nil || opts.MasterName == "" {
			return nil, badURL(Sentinel)
		}
		if err := configureTLS(opts.TLSConfig, o); err != nil {
			return nil, err
		}
		o.applyTo(&opts.Password, &opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.MaxRetries, &opts.PoolSize)
		return redis.NewFailoverClient(opts), nil
	}
	return nil, &OptionError{Option: "Mode", Err: fmt.Errorf("%q: want standalone, cluster or sentinel", o.Mode)}
}

// noMaintNotifications turns off go-redis's maintenance notifications (a
// Redis 8 / Enterprise feature): in "auto" mode each client starts a
// cleanup goroutine that Close does not stop.
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

func badURL(mode string) error {
	return &OptionError{Option: "URL", Err: fmt.Errorf("not a valid redis:// or rediss:// URL for mode %s", mode)}
}

// applyTo sets what ferry sets in every mode: the password from a file,
// short timeouts (a command never hangs a loop), one retry, a pool floor.
func (o Options) applyTo(password *string, dial, read, write *time.Duration, maxRetries, poolSize *int) {
	if o.Password != "" {
		*password = o.Password
	}
	*dial = 2 * time.Second
	*read = o.ReadTimeout()
	*write = 5 * time.Second
	*maxRetries = 1
	*poolSize = max(*poolSize, o.PoolSize)
}

// configureTLS applies the CA and client certificate files to conf (nil
// when the URL is not rediss://).
func configureTLS(conf *tls.Config, o Options) error {
	if conf == nil {
		if o.CAFile != "" || o.CertFile != "" {
			return &OptionError{Option: "CAFile", Err: errors.New("TLS files are set but the URL is not rediss://")}
		}
		return nil
	}
	conf.MinVersion = tls.VersionTLS12
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return &OptionError{Option: "CAFile", Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return &OptionError{Option: "CAFile", Err: errors.New("no PEM certificate found")}
		}
		conf.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return &OptionError{Option: "CertFile", Err: err}
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return nil
}
