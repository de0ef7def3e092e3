package transport

import (
	"net/url"
	"strings"
)

// maxQueryParams is url.ParseQuery's default limit: past it, ParseQuery
// parses nothing (its GODEBUG urlmaxqueryparams is not followed here).
const maxQueryParams = 10000

// queryValue returns the first value of key in the URL query raw and
// whether raw has key at all, as url.ParseQuery(raw) then Get and Has
// would (pairs that do not parse, holding a ';' or a bad escape, are
// skipped, and a query of more than maxQueryParams pairs has none),
// without building the map: a connection's requests each read one or two
// keys, and the parsed query was garbage right after.
func queryValue(raw, key string) (value string, ok bool) {
	if strings.Count(raw, "&") >= maxQueryParams {
		return "", false
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != key {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				continue // as ParseQuery skips it
			}
		}
		return v, true
	}
	return "", false
}
