package hub

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/hubfabric/hubfabric/protocol"
)

var (
	contextType  = reflect.TypeFor[*Context]()
	errorType    = reflect.TypeFor[error]()
	rawValueType = reflect.TypeFor[protocol.RawValue]()
)

// method is one callable hub method, found by reflection.
type method struct {
	name     string
	fn       reflect.Value // bound to the hub value
	params   []reflect.Type
	variadic bool
	uploads  int          // number of <-chan T parameters
	result   reflect.Type // nil for void
	stream   bool         // returns <-chan T
	hasErr   bool
	metrics  *methodMetrics // nil without Config.Metrics
}

// reserved names are lifecycle hooks, not callable methods.
var reserved = map[string]bool{"onconnected": true, "ondisconnected": true}

// methodsOf finds the hub methods of impl: exported methods whose first
// parameter is *Context, returning nothing, an error, a value, a value and
// an error, or a receive channel (a server stream) and an optional error.
// Names are matched case-insensitively, so two methods that differ only in
// case are an error.
func methodsOf(impl any) (map[string]*method, error) {
	v := reflect.ValueOf(impl)
	if !v.IsValid() {
		return nil, errors.New("hub: nil hub value")
	}
	t := v.Type()
	out := map[string]*method{}
	for i := 0; i < t.NumMethod(); i++ {
		mt := t.Method(i)
		ft := mt.Type // includes the receiver
		if ft.NumIn() < 2 || ft.In(1) != contextType {
			continue
		}
		key := strings.ToLower(mt.Name)
		if reserved[key] {
			continue
		}
		m := &method{name: mt.Name, fn: v.Method(i), variadic: ft.IsVariadic()}
		for j := 2; j < ft.NumIn(); j++ {
			p := ft.In(j)
			if p.Kind() == reflect.Chan {
				if p.ChanDir() != reflect.RecvDir {
					return nil, fmt.Errorf("hub: method %s: stream parameters must be receive-only channels (<-chan T)", mt.Name)
				}
				m.uploads++
			}
			m.params = append(m.params, p)
		}
		if err := m.setResults(ft); err != nil {
			return nil, err
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("hub: methods %s and %s differ only in case", out[key].name, mt.Name)
		}
		out[key] = m
	}
	return out, nil
}

func (m *method) setResults(ft reflect.Type) error {
	n := ft.NumOut()
	if n > 2 {
		return fmt.Errorf("hub: method %s returns %d values; at most a result and an error", m.name, n)
	}
	if n >= 1 && ft.Out(n-1) == errorType {
		m.hasErr = true
		n--
	} else if n == 2 {
		return fmt.Errorf("hub: method %s: the second result must be an error", m.name)
	}
	if n == 1 {
		r := ft.Out(0)
		if r.Kind() == reflect.Chan {
			if r.ChanDir() == reflect.SendDir {
				return fmt.Errorf("hub: method %s: a stream result must be a receive channel", m.name)
			}
			m.stream = true
		}
		m.result = r
	}
	return nil
}

// bind decodes the raw arguments into the method's parameters. Upload
// parameters are filled by the caller; their slots are left zero.
func (m *method) bind(p protocol.HubProtocol, args []any) ([]reflect.Value, error) {
	fixed := len(m.params)
	if m.variadic {
		fixed--
	}
	want := fixed - m.uploads
	if len(args) < want || (!m.variadic && len(args) > want) {
		return nil, fmt.Errorf("Invocation provides %d argument(s) but target expects %d.", len(args), want)
	}
	in := make([]reflect.Value, 0, len(m.params)+len(args))
	ai := 0
	for i := 0; i < fixed; i++ {
		pt := m.params[i]
		if pt.Kind() == reflect.Chan {
			in = append(in, reflect.Value{})
			continue
		}
		v, err := decodeArg(p, args[ai], pt)
		if err != nil {
			return nil, fmt.Errorf("Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked. (argument %d: %v)", ai+1, err)
		}
		in = append(in, v)
		ai++
	}
	if m.variadic {
		et := m.params[fixed].Elem()
		for ; ai < len(args); ai++ {
			v, err := decodeArg(p, args[ai], et)
			if err != nil {
				return nil, fmt.Errorf("Error binding arguments. (argument %d: %v)", ai+1, err)
			}
			in = append(in, v)
		}
	}
	return in, nil
}

func decodeArg(p protocol.HubProtocol, arg any, t reflect.Type) (reflect.Value, error) {
	raw, ok := arg.(protocol.RawValue)
	if !ok {
		return reflect.Value{}, fmt.Errorf("argument is %T, not a raw value", arg)
	}
	if t == rawValueType {
		return reflect.ValueOf(append(protocol.RawValue(nil), raw...)), nil
	}
	ptr := reflect.New(t)
	if err := p.Unmarshal(raw, ptr.Interface()); err != nil {
		return reflect.Value{}, err
	}
	return ptr.Elem(), nil
}
