package fencing

import (
	"encoding/xml"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Metadata is a fence agent's self-description (action=metadata), in the
// fence-agents dialect of the resource-agent XML.
type Metadata struct {
	Name      string
	ShortDesc string
	LongDesc  string
	Params    []Param
	// Actions are the actions the agent advertises (off, on, reboot,
	// status, monitor, list, metadata, ...). An agent built with
	// fence-agents' no_status option does not list status.
	Actions []string
}

// Param is one option a fence agent accepts.
type Param struct {
	Name     string
	Required bool
	// Deprecated: an old spelling kept for compatibility (port for plug).
	Deprecated bool
	// Type is the content type: string, integer, second, boolean, select.
	Type    string
	Default string
	// Options are the allowed values of a select parameter.
	Options   []string
	ShortDesc string
}

// Param returns the parameter called name (fence-agents spelling: '-' and
// '_' are the same), or false.
func (m *Metadata) Param(name string) (Param, bool) {
	n := strings.ReplaceAll(name, "-", "_")
	for _, p := range m.Params {
		if strings.ReplaceAll(p.Name, "-", "_") == n {
			return p, true
		}
	}
	return Param{}, false
}

// HasAction reports whether the agent advertises action.
func (m *Metadata) HasAction(action string) bool { return slices.Contains(m.Actions, action) }

// hostArg returns the option that carries the plug: plug if the agent
// knows it, else port (older agents), else "" (the agent fences one fixed
// machine and takes no plug; Pacemaker's pcmk_host_argument=none).
func (m *Metadata) hostArg() string {
	for _, n := range []string{"plug", "port"} {
		if _, ok := m.Param(n); ok {
			return n
		}
	}
	return ""
}

// ParamError lists what is wrong with a device's parameters.
type ParamError struct {
	Device  string
	Agent   string
	Unknown []string // parameters the agent does not know
	Missing []string // required parameters not given
	Invalid []string // "name: reason"
}

// Error names every offending parameter.
func (e *ParamError) Error() string {
	var parts []string
	if len(e.Unknown) > 0 {
		parts = append(parts, "unknown parameter(s) "+strings.Join(e.Unknown, ", "))
	}
	if len(e.Missing) > 0 {
		parts = append(parts, "missing required parameter(s) "+strings.Join(e.Missing, ", "))
	}
	parts = append(parts, e.Invalid...)
	return fmt.Sprintf("fencing: device %s (agent %s): %s", e.Device, e.Agent, strings.Join(parts, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalidParams) hold.
func (e *ParamError) Unwrap() error { return ErrInvalidParams }

// check checks a device's parameters against the metadata: every key is
// known, every required option is given (except those Vigil writes), and
// integers, seconds, booleans and select values parse.
func (m *Metadata) check(d Device) error {
	e := &ParamError{Device: d.Name, Agent: d.Agent}
	for _, k := range sortedKeys(d.Params) {
		v := d.Params[k]
		p, ok := m.Param(k)
		if !ok {
			e.Unknown = append(e.Unknown, k)
			continue
		}
		switch p.Type {
		case "integer", "second":
			if _, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
				e.Invalid = append(e.Invalid, fmt.Sprintf("%s: %q is not a number", k, v))
			}
		case "boolean":
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "1", "yes", "on", "true", "0", "no", "off", "false":
			default:
				e.Invalid = append(e.Invalid, fmt.Sprintf("%s: %q is not a boolean (1/0, yes/no, on/off, true/false)", k, v))
			}
		case "select":
			if len(p.Options) > 0 && !slices.Contains(p.Options, v) {
				e.Invalid = append(e.Invalid, fmt.Sprintf("%s: %q is not one of %s", k, v, strings.Join(p.Options, ", ")))
			}
		}
	}
	for _, p := range m.Params {
		if !p.Required || slices.Contains(reservedParams, normParam(p.Name)) {
			continue
		}
		given := false
		for k, v := range d.Params {
			if normParam(k) == normParam(p.Name) && v != "" {
				given = true
			}
		}
		if !given {
			e.Missing = append(e.Missing, p.Name)
		}
	}
	if !m.HasAction("off") && !m.HasAction("reboot") {
		e.Invalid = append(e.Invalid, "the agent advertises neither off nor reboot: it cannot fence")
	} else if !m.HasAction("off") {
		e.Invalid = append(e.Invalid, "the agent advertises no off action (Vigil fences with off)")
	}
	if len(e.Unknown)+len(e.Missing)+len(e.Invalid) == 0 {
		return nil
	}
	return e
}

type xmlAgent struct {
	XMLName   xml.Name    `xml:"resource-agent"`
	Name      string      `xml:"name,attr"`
	ShortDesc string      `xml:"shortdesc,attr"`
	LongDesc  string      `xml:"longdesc"`
	Params    []xmlParam  `xml:"parameters>parameter"`
	Actions   []xmlAction `xml:"actions>action"`
}

type xmlParam struct {
	Name       string `xml:"name,attr"`
	Required   string `xml:"required,attr"`
	Deprecated string `xml:"deprecated,attr"`
	ShortDesc  string `xml:"shortdesc"`
	Content    struct {
		Type    string `xml:"type,attr"`
		Default string `xml:"default,attr"`
		Options []struct {
			Value string `xml:"value,attr"`
		} `xml:"option"`
	} `xml:"content"`
}

type xmlAction struct {
	Name string `xml:"name,attr"`
}

// ParseMetadata parses a fence agent's metadata XML.
func ParseMetadata(data []byte) (*Metadata, error) {
	var x xmlAgent
	if err := xml.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("fencing: parse metadata: %w", err)
	}
	if x.Name == "" {
		return nil, fmt.Errorf("fencing: parse metadata: resource-agent has no name")
	}
	m := &Metadata{
		Name:      x.Name,
		ShortDesc: strings.TrimSpace(x.ShortDesc),
		LongDesc:  strings.TrimSpace(x.LongDesc),
	}
	for _, p := range x.Params {
		q := Param{
			Name:       p.Name,
			Required:   xmlBool(p.Required),
			Deprecated: xmlBool(p.Deprecated),
			Type:       p.Content.Type,
			Default:    p.Content.Default,
			ShortDesc:  strings.TrimSpace(p.ShortDesc),
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
		if a.Name != "" && !slices.Contains(m.Actions, a.Name) {
			m.Actions = append(m.Actions, a.Name)
		}
	}
	return m, nil
}

func xmlBool(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "yes", "true", "on", "y":
		return true
	}
	return false
}
