package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// buildShipping builds the third example app, a Dapr app written with the
// Dapr Go SDK. It is its own module (examples/shipping: the SDK stays out of
// ferry's go.mod), so it is built in its directory.
func buildShipping(ctx context.Context, goBin, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find ferry's module: %w", err)
	}
	bin := filepath.Join(dir, "shipping")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "examples", "shipping")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build examples/shipping: %w\n%s", err, out)
	}
	return bin, nil
}

// shippedAt returns the order ids the shipping app has shipped.
func shippedAt(app string) ([]string, error) {
	body, err := getBody("http://" + app + "/shipments")
	if err != nil {
		return nil, err
	}
	var seen []struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		return nil, fmt.Errorf("decode shipments: %w", err)
	}
	ids := make([]string, 0, len(seen))
	for _, s := range seen {
		ids = append(ids, s.Data.ID)
	}
	return ids, nil
}
