package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// checkDuplicateKeys rejects JSON with a key repeated in one object, which
// encoding/json would silently resolve to the last value.
func checkDuplicateKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	var walk func(depth int) error
	walk = func(depth int) error {
		if depth > 64 {
			return errors.New("decode JSON body: nested too deep")
		}
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("decode JSON body: %w", err)
		}
		delim, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch delim {
		case '{':
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return fmt.Errorf("decode JSON body: %w", err)
				}
				k, _ := kt.(string)
				if seen[k] {
					return fmt.Errorf("decode JSON body: duplicate key %q", k)
				}
				seen[k] = true
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
		case '[':
			for dec.More() {
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
		}
		_, err = dec.Token() // the closing delimiter
		return err
	}
	return walk(0)
}
