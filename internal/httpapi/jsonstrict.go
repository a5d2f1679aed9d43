package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// checkDuplicateKeys rejects JSON with a key repeated in one object, which
// encoding/json would silently resolve to the last value. Keys are compared
// case-folded, as encoding/json matches them to fields: {"from":1,"FROM":2}
// is a duplicate too.
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
				k := foldKey(kt.(string))
				if seen[k] {
					return fmt.Errorf("decode JSON body: duplicate key %q", kt)
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

// foldKey maps a key to the form that encoding/json's case-insensitive
// field matching treats as equal (simple Unicode folding, like bytes.EqualFold).
func foldKey(k string) string {
	return strings.Map(func(r rune) rune { return unicode.ToUpper(unicode.ToLower(r)) }, k)
}

// DecodeStrict decodes one JSON object into v: anything but an object (null
// included), unknown fields, duplicate keys and trailing data are errors.
func DecodeStrict(r io.Reader, v any) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("decode JSON body: want one JSON object")
	}
	if err := checkDuplicateKeys(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode JSON body: %w", err)
	}
	if dec.More() {
		return errors.New("decode JSON body: trailing data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decode JSON body: trailing data after the object")
	}
	return nil
}
