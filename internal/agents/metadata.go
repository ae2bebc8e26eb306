package agents

import (
	"encoding/xml"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Metadata is an agent's self-description, as in the OCF resource-agent
// meta-data XML.
type Metadata struct {
	// Name is the agent's name (Dummy, IPaddr2, dummy).
	Name string
	// Version is the agent's own version (the resource-agent element's
	// version attribute).
	Version string
	// OCFVersion is the OCF API version the agent implements (<version>).
	OCFVersion string
	ShortDesc  string
	LongDesc   string
	Params     []Param
	Actions    []ActionSpec
}

// Param is one instance attribute an agent accepts.
type Param struct {
	Name       string
	Required   bool
	Unique     bool
	Deprecated bool
	// Type is the content type: string, integer, boolean, select, ...
	Type    string
	Default string
	// Options are the allowed values of a select parameter.
	Options   []string
	ShortDesc string
}

// ActionSpec is an action an agent advertises, with its advised timeout and,
// for monitors, interval and depth.
type ActionSpec struct {
	Name     string
	Timeout  time.Duration
	Interval time.Duration
	Depth    int
	Role     string
}

// Param returns the parameter called name, or false.
func (m *Metadata) Param(name string) (Param, bool) {
	for _, p := range m.Params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// Action returns the first advertised action called name, or false.
func (m *Metadata) Action(name string) (ActionSpec, bool) {
	for _, a := range m.Actions {
		if a.Name == name {
			return a, true
		}
	}
	return ActionSpec{}, false
}

// ValidationError lists what is wrong with a resource's parameters.
type ValidationError struct {
	Agent   string   // agent name
	Unknown []string // parameters the agent does not know
	Missing []string // required parameters not given (or empty)
	Invalid []string // "name: reason", a value of the wrong type
}

// Error names every offending parameter.
func (e *ValidationError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "missing required parameter "+quoteList(e.Missing))
	}
	if len(e.Unknown) > 0 {
		parts = append(parts, "unknown parameter "+quoteList(e.Unknown))
	}
	parts = append(parts, e.Invalid...)
	return fmt.Sprintf("agents: invalid parameters for %s: %s", e.Agent, strings.Join(parts, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalidParams) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidParams }

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// Validate checks instance attributes against the meta-data: every
// parameter must be known, every required one present and non-empty,
// integers must parse as integers, booleans as Pacemaker booleans, and a
// select value must be one of its options. It returns a *ValidationError
// naming every offending parameter, or nil.
func (m *Metadata) Validate(params map[string]string) error {
	e := &ValidationError{Agent: m.Name}
	for _, name := range sortedKeys(params) {
		v := params[name]
		p, ok := m.Param(name)
		if !ok {
			e.Unknown = append(e.Unknown, name)
			continue
		}
		if v == "" {
			continue // empty means unset; required is checked below
		}
		switch p.Type {
		case "integer":
			if _, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				e.Invalid = append(e.Invalid, fmt.Sprintf("%s: %q is not an integer", name, v))
			}
		case "boolean":
			if _, ok := ParseBool(v); !ok {
				e.Invalid = append(e.Invalid, fmt.Sprintf("%s: %q is not a boolean", name, v))
			}
		case "select":
			if len(p.Options) > 0 && !slices.Contains(p.Options, v) {
				e.Invalid = append(e.Invalid, fmt.Sprintf("%s: %q is not one of %s", name, v, strings.Join(p.Options, ", ")))
			}
		}
	}
	for _, p := range m.Params {
		if p.Required && params[p.Name] == "" {
			e.Missing = append(e.Missing, p.Name)
		}
	}
	if len(e.Unknown)+len(e.Missing)+len(e.Invalid) == 0 {
		return nil
	}
	return e
}

// ParseBool parses a boolean the way Pacemaker does (crm_str_to_boolean):
// yes/true/on/y/1 and no/false/off/n/0, case-insensitive.
func ParseBool(s string) (value, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "true", "on", "y", "1":
		return true, true
	case "no", "false", "off", "n", "0":
		return false, true
	}
	return false, false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// The OCF resource-agent XML (ra-api-1.dtd, OCF 1.1).
type xmlAgent struct {
	XMLName    xml.Name    `xml:"resource-agent"`
	Name       string      `xml:"name,attr"`
	Version    string      `xml:"version,attr,omitempty"`
	OCFVersion string      `xml:"version,omitempty"`
	LongDesc   xmlDesc     `xml:"longdesc"`
	ShortDesc  xmlDesc     `xml:"shortdesc"`
	Params     []xmlParam  `xml:"parameters>parameter"`
	Actions    []xmlAction `xml:"actions>action"`
}

type xmlDesc struct {
	Lang string `xml:"lang,attr,omitempty"`
	Text string `xml:",chardata"`
}

type xmlParam struct {
	Name       string     `xml:"name,attr"`
	Unique     string     `xml:"unique,attr,omitempty"`
	Required   string     `xml:"required,attr,omitempty"`
	Deprecated string     `xml:"deprecated,attr,omitempty"`
	LongDesc   xmlDesc    `xml:"longdesc"`
	ShortDesc  xmlDesc    `xml:"shortdesc"`
	Content    xmlContent `xml:"content"`
}

type xmlContent struct {
	Type    string      `xml:"type,attr"`
	Default string      `xml:"default,attr,omitempty"`
	Options []xmlOption `xml:"option"`
}

type xmlOption struct {
	Value string `xml:"value,attr"`
}

type xmlAction struct {
	Name     string `xml:"name,attr"`
	Timeout  string `xml:"timeout,attr,omitempty"`
	Interval string `xml:"interval,attr,omitempty"`
	Depth    string `xml:"depth,attr,omitempty"`
	Role     string `xml:"role,attr,omitempty"`
}

// ParseMetadata parses OCF resource-agent meta-data XML.
func ParseMetadata(data []byte) (*Metadata, error) {
	var x xmlAgent
	if err := xml.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("agents: parse meta-data: %w", err)
	}
	if x.Name == "" {
		return nil, fmt.Errorf("agents: parse meta-data: resource-agent has no name")
	}
	m := &Metadata{
		Name:       x.Name,
		Version:    x.Version,
		OCFVersion: strings.TrimSpace(x.OCFVersion),
		ShortDesc:  strings.TrimSpace(x.ShortDesc.Text),
		LongDesc:   strings.TrimSpace(x.LongDesc.Text),
	}
	for _, p := range x.Params {
		q := Param{
			Name:       p.Name,
			Required:   xmlBool(p.Required),
			Unique:     xmlBool(p.Unique),
			Deprecated: xmlBool(p.Deprecated),
			Type:       p.Content.Type,
			Default:    p.Content.Default,
			ShortDesc:  strings.TrimSpace(p.ShortDesc.Text),
		}
		if q.Type == "" {
			q.Type = "string"
		}
		for _, o := range p.Content.Options {
			q.Options = append(q.Options, o.Value)
		}
		m.Params = append(m.Params, q)
	}
	for _, a := range x.Actions {
		depth, _ := strconv.Atoi(strings.TrimSpace(a.Depth))
		m.Actions = append(m.Actions, ActionSpec{
			Name:     a.Name,
			Timeout:  ParseOCFDuration(a.Timeout),
			Interval: ParseOCFDuration(a.Interval),
			Depth:    depth,
			Role:     a.Role,
		})
	}
	return m, nil
}

// xml renders m as OCF resource-agent meta-data (what the built-in
// agents print for the meta-data action).
func (m *Metadata) xml() []byte {
	x := xmlAgent{
		Name:       m.Name,
		Version:    m.Version,
		OCFVersion: m.OCFVersion,
		LongDesc:   xmlDesc{Lang: "en", Text: m.LongDesc},
		ShortDesc:  xmlDesc{Lang: "en", Text: m.ShortDesc},
	}
	for _, p := range m.Params {
		xp := xmlParam{
			Name:      p.Name,
			Unique:    boolXML(p.Unique),
			Required:  boolXML(p.Required),
			ShortDesc: xmlDesc{Lang: "en", Text: p.ShortDesc},
			Content:   xmlContent{Type: p.Type, Default: p.Default},
		}
		for _, o := range p.Options {
			xp.Content.Options = append(xp.Content.Options, xmlOption{Value: o})
		}
		x.Params = append(x.Params, xp)
	}
	for _, a := range m.Actions {
		xa := xmlAction{Name: a.Name, Role: a.Role}
		if a.Timeout > 0 {
			xa.Timeout = a.Timeout.String()
		}
		if a.Interval > 0 {
			xa.Interval = a.Interval.String()
			xa.Depth = strconv.Itoa(a.Depth)
		}
		x.Actions = append(x.Actions, xa)
	}
	out, err := xml.MarshalIndent(x, "", "  ")
	if err != nil {
		panic("agents: marshal built-in meta-data: " + err.Error()) // programmer error
	}
	return append([]byte(xml.Header), append(out, '\n')...)
}

func xmlBool(s string) bool {
	v, _ := ParseBool(s)
	return v
}

func boolXML(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// ParseOCFDuration parses a timeout or interval as written in meta-data and
// Pacemaker configuration: a bare number is seconds; units ms, msec, us,
// usec, s, sec, m, min, h, hr are accepted. It returns 0 for an empty or
// unparsable value.
func ParseOCFDuration(s string) time.Duration {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "" {
		return 0
	}
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0
	}
	var scale time.Duration
	switch unit {
	case "", "s", "sec":
		scale = time.Second
	case "ms", "msec":
		scale = time.Millisecond
	case "us", "usec":
		scale = time.Microsecond
	case "m", "min":
		scale = time.Minute
	case "h", "hr":
		scale = time.Hour
	default:
		return 0
	}
	return time.Duration(f * float64(scale))
}
