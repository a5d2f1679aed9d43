package apphealth_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ferry-sidecar/ferry/apphealth"
)

func Example() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer app.Close()

	changed := make(chan bool, 1)
	p, err := apphealth.New(apphealth.Config{
		URL:       app.URL, // FERRY_APP_URL
		Path:      "/healthz",
		Interval:  100 * time.Millisecond,
		Threshold: 3,
		OnChange:  func(healthy bool) { changed <- healthy }, // pause or resume delivery
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()

	fmt.Println(<-changed, p.Value())
	cancel()
	fmt.Println(<-done)
	// Output:
	// true 1
	// <nil>
}
