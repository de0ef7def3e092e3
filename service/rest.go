package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/hub"
)

// ErrorDetail is the body of every REST error, as Azure SignalR Service's.
type ErrorDetail struct {
	Code    string `json:"code"`
	Level   string `json:"level"`
	Message string `json:"message"`
	Target  string `json:"target,omitempty"`
}

// restError is an error with its HTTP status and ErrorDetail.
type restError struct {
	status int
	code   string
	msg    string
}

func (e *restError) Error() string { return e.msg }

func badRequest(format string, args ...any) *restError {
	return &restError{http.StatusBadRequest, "Error.BadRequest", fmt.Sprintf(format, args...)}
}

func notFound(code, format string, args ...any) *restError {
	return &restError{http.StatusNotFound, code, fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, r *http.Request, e *restError) {
	level := "Error"
	if e.status == http.StatusNotFound {
		level = "Warning"
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.status)
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(ErrorDetail{Code: e.code, Level: level, Message: e.msg, Target: r.URL.Path})
}

// Handler serves the REST API under /api/ and the client endpoint under
// /client/ (/client/negotiate?hub=NAME and /client/?hub=NAME, handed to
// nodeHandler, the node's hub.Node.Handler, as /client/NAME...). Mount it
// on "/api/" and "/client/".
func (s *Service) Handler(nodeHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/client/") || r.URL.Path == "/client":
			s.serveClient(w, r, nodeHandler)
		case strings.HasPrefix(r.URL.Path, "/api/"):
			s.serveREST(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

func (s *Service) serveClient(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/client"), "/")
	if rest != "" && rest != "negotiate" {
		writeError(w, r, notFound("Error.NotFound", "no client endpoint at %q: use /client/?hub=NAME or /client/negotiate?hub=NAME", shorten(r.URL.Path, 100)))
		return
	}
	q := r.URL.Query().Get("hub")
	s.mu.Lock()
	name, ok := s.lower[strings.ToLower(q)]
	s.mu.Unlock()
	if !ok {
		writeError(w, r, notFound("Error.Hub.NotExisted", "hub %q is not served here", shorten(q, 100)))
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/client/" + name
	r2.URL.RawPath = ""
	if rest == "negotiate" {
		r2.URL.Path += "/negotiate"
	}
	next.ServeHTTP(w, r2)
}

// op is one REST operation, found by route.
type op struct {
	name  string
	hub   string
	conn  string
	group string
	user  string
}

// route maps a method and the path segments after /api/ to an operation.
func route(method string, seg []string) (op, *restError) {
	var o op
	v1 := len(seg) > 0 && seg[0] == "v1"
	if v1 {
		seg = seg[1:]
	}
	if len(seg) == 1 && seg[0] == "health" {
		return op{name: "health"}, allow(method, "GET", "HEAD")
	}
	if len(seg) == 4 && seg[0] == "hubfabric" && seg[1] == "hubs" && seg[3] == "presence" {
		return op{name: "presence", hub: seg[2]}, allow(method, "GET")
	}
	if len(seg) == 6 && seg[0] == "hubfabric" && seg[1] == "hubs" && seg[3] == "groups" && seg[5] == "members" {
		return op{name: "members", hub: seg[2], group: seg[4]}, allow(method, "GET")
	}
	if len(seg) < 2 || seg[0] != "hubs" {
		return o, notFound("Error.NotFound", "no REST operation at this path")
	}
	o.hub = seg[1]
	r := seg[2:]
	is := func(parts ...string) bool {
		if len(parts) != len(r) {
			return false
		}
		for i, p := range parts {
			if p != "*" && p != r[i] {
				return false
			}
		}
		return true
	}
	switch {
	case is() && v1:
		o.name = "sendAll"
		return o, allow(method, "POST")
	case is(":send"):
		o.name = "sendAll"
		return o, allow(method, "POST")
	case is(":closeConnections"):
		o.name = "closeAll"
		return o, allow(method, "POST")
	case is("connections", "*"):
		o.conn = r[1]
		switch {
		case method == "POST" && v1:
			o.name = "sendConn"
		case method == "DELETE":
			o.name = "closeConn"
		default:
			o.name = "connExists"
			return o, allow(method, "GET", "HEAD", "DELETE")
		}
		return o, nil
	case is("connections", "*", ":send"):
		o.name, o.conn = "sendConn", r[1]
		return o, allow(method, "POST")
	case is("connections", "*", "groups"):
		o.name, o.conn = "connLeaveAll", r[1]
		return o, allow(method, "DELETE")
	case is("groups", "*"):
		o.group = r[1]
		if method == "POST" && v1 {
			o.name = "sendGroup"
			return o, nil
		}
		o.name = "groupExists"
		return o, allow(method, "GET", "HEAD")
	case is("groups", "*", ":send"):
		o.name, o.group = "sendGroup", r[1]
		return o, allow(method, "POST")
	case is("groups", "*", ":closeConnections"):
		o.name, o.group = "closeGroup", r[1]
		return o, allow(method, "POST")
	case is("groups", "*", "connections", "*"):
		o.group, o.conn = r[1], r[3]
		o.name = map[string]string{"PUT": "connJoin", "DELETE": "connLeave"}[method]
		return o, allow(method, "PUT", "DELETE")
	case is("groups", "*", "users", "*"):
		o.group, o.user = r[1], r[3]
		o.name = map[string]string{"PUT": "userJoin", "DELETE": "userLeave", "GET": "userInGroup", "HEAD": "userInGroup"}[method]
		return o, allow(method, "PUT", "DELETE", "GET", "HEAD")
	case is("users", "*"):
		o.user = r[1]
		if method == "POST" && v1 {
			o.name = "sendUser"
			return o, nil
		}
		o.name = "userExists"
		return o, allow(method, "GET", "HEAD")
	case is("users", "*", ":send"):
		o.name, o.user = "sendUser", r[1]
		return o, allow(method, "POST")
	case is("users", "*", ":closeConnections"):
		o.name, o.user = "closeUser", r[1]
		return o, allow(method, "POST")
	case is("users", "*", "groups"):
		o.name, o.user = "userLeaveAll", r[1]
		return o, allow(method, "DELETE")
	case is("users", "*", "groups", "*"):
		o.user, o.group = r[1], r[3]
		o.name = map[string]string{"PUT": "userJoin", "DELETE": "userLeave", "GET": "userInGroup", "HEAD": "userInGroup"}[method]
		return o, allow(method, "PUT", "DELETE", "GET", "HEAD")
	}
	return o, notFound("Error.NotFound", "no REST operation at this path")
}

func allow(method string, methods ...string) *restError {
	for _, m := range methods {
		if m == method {
			return nil
		}
	}
	return &restError{http.StatusMethodNotAllowed, "Error.MethodNotAllowed", fmt.Sprintf("method %s is not allowed here (allowed: %s)", method, strings.Join(methods, ", "))}
}

// segments splits the escaped path after /api/ into unescaped segments;
// an empty segment, "." or ".." is refused.
func segments(escaped string) ([]string, *restError) {
	rest := strings.TrimPrefix(escaped, "/api/")
	rest = strings.TrimSuffix(rest, "/")
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		v, err := url.PathUnescape(p)
		if err != nil {
			return nil, badRequest("malformed path segment %q: %v", shorten(p, 100), err)
		}
		if v == "" || v == "." || v == ".." {
			return nil, badRequest("empty, '.' or '..' path segment at position %d", i+1)
		}
		parts[i] = v
	}
	return parts, nil
}

func (s *Service) serveREST(w http.ResponseWriter, r *http.Request) {
	seg, rerr := segments(r.URL.EscapedPath())
	if rerr != nil {
		writeError(w, r, rerr)
		return
	}
	o, rerr := route(r.Method, seg)
	if rerr != nil {
		writeError(w, r, rerr)
		return
	}
	if o.name == "health" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if v := r.URL.Query().Get("api-version"); v != "" && v != APIVersion && seg[0] != "v1" {
		writeError(w, r, badRequest("api-version %q is not supported; use %s", shorten(v, 40), APIVersion))
		return
	}
	if _, err := s.verifier.verifyREST(r); err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(w, r, &restError{http.StatusUnauthorized, "Error.Unauthorized", err.Error()})
		return
	}
	hc, ok := s.hubContext(o.hub)
	if !ok {
		writeError(w, r, notFound("Error.Hub.NotExisted", "hub %q is not served here (cmd/node --hub)", shorten(o.hub, 100)))
		return
	}
	if e := s.checkNames(o); e != nil {
		writeError(w, r, e)
		return
	}
	status, body, e := s.do(r, o, hc)
	if e != nil {
		writeError(w, r, e)
		return
	}
	if body != nil {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
		return
	}
	w.WriteHeader(status)
}

func (s *Service) checkNames(o op) *restError {
	if len(o.group) > s.cfg.MaxGroupNameBytes {
		return badRequest("group name is %d bytes; the limit is %d", len(o.group), s.cfg.MaxGroupNameBytes)
	}
	if len(o.conn) > MaxNameBytes {
		return badRequest("connection id is %d bytes; the limit is %d", len(o.conn), MaxNameBytes)
	}
	if len(o.user) > MaxNameBytes {
		return badRequest("user id is %d bytes; the limit is %d", len(o.user), MaxNameBytes)
	}
	return nil
}

// message is the body of the send operations.
type message struct {
	Target    string            `json:"target"`
	Arguments []json.RawMessage `json:"arguments"`
}

func (s *Service) readMessage(w http.ResponseWriter, r *http.Request) (string, []any, *restError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return "", nil, &restError{http.StatusRequestEntityTooLarge, "Error.PayloadTooLarge", fmt.Sprintf("the body is over %d bytes", s.cfg.MaxBodyBytes)}
		}
		return "", nil, badRequest("reading the body failed: %v", err)
	}
	var m message
	if err := json.Unmarshal(body, &m); err != nil {
		return "", nil, badRequest("the body is not a JSON object {\"target\": string, \"arguments\": [...]}: %v", err)
	}
	if m.Target == "" {
		return "", nil, badRequest("the body has no \"target\"")
	}
	args := make([]any, len(m.Arguments))
	for i, a := range m.Arguments {
		v, err := decodeValue(a)
		if err != nil {
			return "", nil, badRequest("argument %d: %v", i, err)
		}
		args[i] = v
	}
	return m.Target, args, nil
}

// decodeValue decodes JSON keeping integers exact (int64 when they fit),
// so both hub protocols encode the same values.
func decodeValue(raw json.RawMessage) (any, error) {
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = numbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = numbers(x[k])
		}
	}
	return v
}

// fromHub turns a hub error into a REST error.
func fromHub(err error) *restError {
	switch {
	case errors.Is(err, actors.ErrUnknownConnection):
		return notFound("Warning.Connection.NotExisted", "%s", err.Error())
	case errors.Is(err, actors.ErrLimitExceeded):
		return badRequest("%s", err.Error())
	case errors.Is(err, actors.ErrNotDeliveredRemotely):
		return &restError{http.StatusServiceUnavailable, "Error.ServiceUnavailable", err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &restError{http.StatusGatewayTimeout, "Error.Timeout", "the operation did not finish in time"}
	}
	return &restError{http.StatusInternalServerError, "Error.Internal", err.Error()}
}

func storeErr(err error) *restError {
	return &restError{http.StatusServiceUnavailable, "Error.ServiceUnavailable", "the service's registry is unavailable: " + err.Error()}
}

// do runs operation o; it returns the status and an optional JSON body.
func (s *Service) do(r *http.Request, o op, hc *hub.HubContext) (int, any, *restError) {
	ctx := r.Context()
	q := r.URL.Query()
	excluded := q["excluded"]
	st := s.cfg.Store
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	send := func(p hub.ClientProxy) (int, any, *restError) {
		target, args, e := s.readMessage(nil, r)
		if e != nil {
			return 0, nil, e
		}
		if err := p.Send(ctx, target, args...); err != nil {
			return 0, nil, fromHub(err)
		}
		return http.StatusAccepted, nil, nil
	}
	exists := func(ok bool, err error, code, what string) (int, any, *restError) {
		if err != nil {
			return 0, nil, storeErr(err)
		}
		if !ok {
			return 0, nil, notFound(code, "%s does not exist", what)
		}
		return http.StatusOK, nil, nil
	}
	reason := q.Get("reason")
	switch o.name {
	case "sendAll":
		return send(hc.Clients.AllExcept(excluded...))
	case "sendConn":
		return send(hc.Clients.Client(o.conn))
	case "sendGroup":
		return send(hc.Clients.GroupExcept(o.group, excluded...))
	case "sendUser":
		return send(hc.Clients.User(o.user))
	case "connExists":
		_, _, ok, err := st.Connection(sctx, o.hub, o.conn)
		return exists(ok, err, "Warning.Connection.NotExisted", "the connection")
	case "groupExists":
		m, err := st.GroupConnections(sctx, o.hub, o.group)
		return exists(len(m) > 0, err, "Warning.Group.NotExisted", "the group")
	case "userExists":
		m, err := st.UserConnections(sctx, o.hub, o.user)
		return exists(len(m) > 0, err, "Warning.User.NotExisted", "the user")
	case "userInGroup":
		gs, err := st.UserGroups(sctx, o.hub, o.user)
		_, in := gs[o.group]
		if err == nil && !in {
			in, err = s.userConnInGroup(sctx, o.hub, o.user, o.group)
		}
		return exists(in, err, "Warning.UserInGroup.NotExisted", "the user in the group")
	case "connJoin", "connLeave":
		_, _, ok, err := st.Connection(sctx, o.hub, o.conn)
		if err != nil {
			return 0, nil, storeErr(err)
		}
		if !ok {
			return 0, nil, notFound("Warning.Connection.NotExisted", "the connection does not exist")
		}
		if o.name == "connJoin" {
			if e := s.join(ctx, hc, o.hub, o.group, o.conn); e != nil {
				return 0, nil, e
			}
		} else if e := s.leave(ctx, hc, o.hub, o.group, o.conn); e != nil {
			return 0, nil, e
		}
		return http.StatusOK, nil, nil
	case "connLeaveAll":
		groups, err := st.ConnectionGroups(sctx, o.hub, o.conn)
		if err != nil {
			return 0, nil, storeErr(err)
		}
		for _, g := range groups {
			if e := s.leave(ctx, hc, o.hub, g, o.conn); e != nil {
				return 0, nil, e
			}
		}
		return http.StatusOK, nil, nil
	case "userJoin":
		var ttl time.Duration
		if v := q.Get("ttl"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > 365*24*3600*100 {
				return 0, nil, badRequest("ttl %q: want a whole number of seconds, 0 or more", shorten(v, 40))
			}
			ttl = time.Duration(n) * time.Second
			if n == 0 {
				ttl = time.Nanosecond // not kept for later connections
			}
		}
		if err := st.AddUserToGroup(sctx, o.hub, o.user, o.group, ttl); err != nil {
			return 0, nil, storeErr(err)
		}
		// ttl=0 adds only the current connections, for good (Azure):
		// the membership is not kept, and no expiry takes them out.
		if ttl > time.Nanosecond {
			s.scheduleExpiry(o.hub, o.user, o.group, time.Now().Add(ttl))
		}
		conns, err := st.UserConnections(sctx, o.hub, o.user)
		if err != nil {
			return 0, nil, storeErr(err)
		}
		for _, id := range sortedKeys(conns) {
			if e := s.join(ctx, hc, o.hub, o.group, id); e != nil && e.status != http.StatusNotFound {
				return 0, nil, e
			}
		}
		return http.StatusOK, nil, nil
	case "userLeave":
		if _, err := st.RemoveUserFromGroup(sctx, o.hub, o.user, o.group); err != nil {
			return 0, nil, storeErr(err)
		}
		if e := s.userLeave(ctx, hc, o.hub, o.user, []string{o.group}); e != nil {
			return 0, nil, e
		}
		return http.StatusOK, nil, nil
	case "userLeaveAll":
		groups, err := st.UserGroups(sctx, o.hub, o.user)
		if err != nil {
			return 0, nil, storeErr(err)
		}
		for g := range groups {
			if _, err := st.RemoveUserFromGroup(sctx, o.hub, o.user, g); err != nil {
				return 0, nil, storeErr(err)
			}
		}
		if e := s.userLeave(ctx, hc, o.hub, o.user, nil); e != nil {
			return 0, nil, e
		}
		return http.StatusOK, nil, nil
	case "closeConn":
		_, node, ok, err := st.Connection(sctx, o.hub, o.conn)
		if err != nil {
			return 0, nil, storeErr(err)
		}
		if ok {
			if err := s.closeConnections(ctx, o.hub, map[string]string{o.conn: node}, reason); err != nil {
				return 0, nil, fromHub(err)
			}
		}
		return http.StatusNoContent, nil, nil
	case "closeGroup", "closeUser":
		var conns map[string]string
		var err error
		if o.name == "closeGroup" {
			conns, err = st.GroupConnections(sctx, o.hub, o.group)
		} else {
			conns, err = st.UserConnections(sctx, o.hub, o.user)
		}
		if err != nil {
			return 0, nil, storeErr(err)
		}
		for _, e := range excluded {
			delete(conns, e)
		}
		if err := s.closeConnections(ctx, o.hub, conns, reason); err != nil {
			return 0, nil, fromHub(err)
		}
		return http.StatusNoContent, nil, nil
	case "closeAll":
		if err := s.closeAll(ctx, o.hub, excluded, reason); err != nil {
			return 0, nil, fromHub(err)
		}
		return http.StatusNoContent, nil, nil
	case "presence":
		c, u, err := st.Counts(sctx, o.hub)
		if err != nil {
			return 0, nil, storeErr(err)
		}
		return http.StatusOK, map[string]any{"hub": o.hub, "connectionCount": c, "userCount": u}, nil
	case "members":
		m, err := st.GroupConnections(sctx, o.hub, o.group)
		if err != nil {
			return 0, nil, storeErr(err)
		}
		ids := sortedKeys(m)
		return http.StatusOK, map[string]any{"hub": o.hub, "group": o.group, "connectionCount": len(ids), "connectionIds": ids}, nil
	}
	return 0, nil, notFound("Error.NotFound", "no REST operation at this path")
}

// join adds conn to group on its node and records it.
func (s *Service) join(ctx context.Context, hc *hub.HubContext, hubName, group, conn string) *restError {
	if err := hc.Groups.Add(ctx, conn, group); err != nil {
		return fromHub(err)
	}
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	if _, err := s.cfg.Store.AddToGroup(sctx, hubName, group, conn); err != nil {
		return storeErr(err)
	}
	return nil
}

// leave takes conn out of group on its node and in the store.
func (s *Service) leave(ctx context.Context, hc *hub.HubContext, hubName, group, conn string) *restError {
	if err := hc.Groups.Remove(ctx, conn, group); err != nil && !errors.Is(err, actors.ErrUnknownConnection) {
		return fromHub(err)
	}
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	if _, err := s.cfg.Store.RemoveFromGroup(sctx, hubName, group, conn); err != nil {
		return storeErr(err)
	}
	return nil
}

// userLeave takes the user's connections out of groups (nil: all of
// their groups).
func (s *Service) userLeave(ctx context.Context, hc *hub.HubContext, hubName, user string, groups []string) *restError {
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	conns, err := s.cfg.Store.UserConnections(sctx, hubName, user)
	if err != nil {
		return storeErr(err)
	}
	for _, id := range sortedKeys(conns) {
		gs := groups
		if gs == nil {
			if gs, err = s.cfg.Store.ConnectionGroups(sctx, hubName, id); err != nil {
				return storeErr(err)
			}
		}
		for _, g := range gs {
			if e := s.leave(ctx, hc, hubName, g, id); e != nil {
				return e
			}
		}
	}
	return nil
}

func (s *Service) userConnInGroup(ctx context.Context, hubName, user, group string) (bool, error) {
	conns, err := s.cfg.Store.UserConnections(ctx, hubName, user)
	if err != nil {
		return false, err
	}
	members, err := s.cfg.Store.GroupConnections(ctx, hubName, group)
	if err != nil {
		return false, err
	}
	for id := range conns {
		if _, ok := members[id]; ok {
			return true, nil
		}
	}
	return false, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
