package transport

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzQueryValue: queryValue answers as url.ParseQuery's Get and Has do,
// for any raw query and key.
func FuzzQueryValue(f *testing.F) {
	for _, seed := range [][2]string{
		{"id=abc", "id"},
		{"negotiateVersion=1&useStatefulReconnect=true", "useStatefulReconnect"},
		{"a=1&a=2", "a"},
		{"%69d=x%20y", "id"},
		{"id=%zz&id=ok", "id"},
		{"id=1;x=2&id=3", "id"},
		{"id&id=2", "id"},
		{"=v&id=", "id"},
		{"i+d=a+b", "i d"},
		{"&&id=1&&", "id"},
		{"", "id"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, raw, key string) {
		q, _ := url.ParseQuery(raw)
		v, ok := queryValue(raw, key)
		if want, wantOK := q.Get(key), q.Has(key); v != want || ok != wantOK {
			t.Fatalf("queryValue(%q, %q) = %q, %v; ParseQuery gives %q, %v", raw, key, v, ok, want, wantOK)
		}
	})
}

// TestQueryValueOverTheParameterLimit: at url.ParseQuery's limit of
// parameters queryValue still finds the key, and past it finds nothing,
// as ParseQuery does (the fuzzer does not reach 10,000 pairs).
func TestQueryValueOverTheParameterLimit(t *testing.T) {
	for _, pairs := range []int{maxQueryParams, maxQueryParams + 1} {
		raw := "id=tok" + strings.Repeat("&", pairs-1)
		q, _ := url.ParseQuery(raw)
		v, ok := queryValue(raw, "id")
		want, wantOK := q.Get("id"), q.Has("id")
		if v != want || ok != wantOK {
			t.Errorf("%d pairs: queryValue = %q, %v; ParseQuery gives %q, %v", pairs, v, ok, want, wantOK)
		}
		if wantOK != (pairs <= maxQueryParams) {
			t.Errorf("%d pairs: ParseQuery found the key: %v (its limit is not %d?)", pairs, wantOK, maxQueryParams)
		}
	}
}
