package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
)

// scoreRE matches a score as the server reads it: an integer or
// [+-]INFINITY (any case, "inf" too).
var scoreRE = regexp.MustCompile(`(?i)^[+-]?([0-9]+|inf|infinity)$`)

// scoreArg reads SCORE or score=SCORE.
func scoreArg(s string) (string, bool) {
	if v, ok := strings.CutPrefix(s, "score="); ok {
		return v, scoreRE.MatchString(v)
	}
	return s, scoreRE.MatchString(s)
}

// negate turns a positive score into the negative one (for avoids).
func negate(s string) (string, error) {
	if strings.HasPrefix(s, "-") {
		return "", fmt.Errorf("score %q: avoids takes a positive score and negates it", s)
	}
	return "-" + strings.TrimPrefix(s, "+"), nil
}

var ruleOps = map[string]bool{"eq": true, "ne": true, "lt": true, "lte": true, "gt": true, "gte": true}

// parseLocation parses
//
//	ID RESOURCE prefers NODE[=SCORE]
//	ID RESOURCE avoids NODE[=SCORE]
//	ID RESOURCE rule [score=]SCORE ATTR OP VALUE   (OP: eq ne lt lte gt gte)
//	ID RESOURCE rule [score=]SCORE defined|not_defined ATTR
//
// prefers defaults to INFINITY, avoids to -INFINITY, a rule to INFINITY.
func parseLocation(args []string) (api.Location, error) {
	const usage = "want ID RESOURCE prefers|avoids NODE[=SCORE], or ID RESOURCE rule [score=]SCORE ATTR OP VALUE"
	if len(args) < 3 {
		return api.Location{}, fmt.Errorf("location: %s", usage)
	}
	l := api.Location{ID: args[0], Resource: args[1]}
	switch args[2] {
	case "prefers", "avoids":
		if len(args) != 4 {
			return l, fmt.Errorf("location %s: %s NODE[=SCORE] (one node per constraint)", l.ID, args[2])
		}
		node, score, hasScore := strings.Cut(args[3], "=")
		if node == "" {
			return l, fmt.Errorf("location %s: no node given", l.ID)
		}
		l.Node, l.Score = node, "INFINITY"
		if hasScore {
			if !scoreRE.MatchString(score) {
				return l, fmt.Errorf("location %s: score %q: want an integer or INFINITY", l.ID, score)
			}
			l.Score = score
		}
		if args[2] == "avoids" {
			var err error
			if l.Score, err = negate(l.Score); err != nil {
				return l, fmt.Errorf("location %s: %w", l.ID, err)
			}
		}
		return l, nil
	case "rule":
		rest := args[3:]
		l.Score = "INFINITY"
		if len(rest) > 0 {
			if s, ok := scoreArg(rest[0]); ok {
				l.Score, rest = s, rest[1:]
			} else if strings.HasPrefix(rest[0], "score=") {
				return l, fmt.Errorf("location %s: %q: want an integer or [+-]INFINITY", l.ID, rest[0])
			}
		}
		var e api.Expression
		switch {
		case len(rest) == 2 && (rest[0] == "defined" || rest[0] == "not_defined"):
			e = api.Expression{Op: rest[0], Attribute: rest[1]}
		case len(rest) == 3 && ruleOps[rest[1]]:
			e = api.Expression{Attribute: rest[0], Op: rest[1], Value: rest[2]}
		case len(rest) == 3:
			return l, fmt.Errorf("location %s: rule operator %q: want eq, ne, lt, lte, gt, gte (or defined ATTR, not_defined ATTR)", l.ID, rest[1])
		default:
			return l, fmt.Errorf("location %s: rule: want [score=]SCORE ATTR OP VALUE, or [score=]SCORE defined|not_defined ATTR (one expression)", l.ID)
		}
		l.Rule = &api.Rule{Expressions: []api.Expression{e}}
		return l, nil
	}
	return l, fmt.Errorf("location %s: %q: %s", l.ID, args[2], usage)
}

// parseColocation parses ID RESOURCE with WITH [[score=]SCORE] (default
// INFINITY: together; -INFINITY: apart).
func parseColocation(args []string) (api.Colocation, error) {
	if len(args) < 4 || len(args) > 5 || args[2] != "with" {
		return api.Colocation{}, fmt.Errorf("colocation: want ID RESOURCE with WITH [SCORE] (INFINITY: together, -INFINITY: apart)")
	}
	co := api.Colocation{ID: args[0], Resource: args[1], With: args[3], Score: "INFINITY"}
	if len(args) == 5 {
		s, ok := scoreArg(args[4])
		if !ok {
			return co, fmt.Errorf("colocation %s: score %q: want an integer or [+-]INFINITY", co.ID, args[4])
		}
		co.Score = s
	}
	return co, nil
}

// parseOrder parses ID FIRST then THEN [kind=Mandatory|Optional]
// [symmetrical=true|false].
func parseOrder(args []string) (api.Order, error) {
	if len(args) < 4 || args[2] != "then" {
		return api.Order{}, fmt.Errorf("order: want ID FIRST then THEN [kind=Mandatory|Optional] [symmetrical=false]")
	}
	o := api.Order{ID: args[0], First: args[1], Then: args[3]}
	for _, a := range args[4:] {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "kind":
			switch strings.ToLower(v) {
			case "mandatory":
				o.Kind = "Mandatory"
			case "optional":
				o.Kind = "Optional"
			default:
				return o, fmt.Errorf("order %s: kind %q: want Mandatory or Optional", o.ID, v)
			}
		case "symmetrical":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, fmt.Errorf("order %s: symmetrical %q: want true or false", o.ID, v)
			}
			o.Symmetrical = &b
		default:
			return o, fmt.Errorf("order %s: %q: want kind=Mandatory|Optional or symmetrical=true|false", o.ID, a)
		}
	}
	return o, nil
}

func newConstraintCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "constraint",
		Short: "Location, colocation and order constraints",
	}
	location := newConstraintKindCmd(g, "location", "Where a resource prefers or refuses to run",
		[]string{"add ID RESOURCE (prefers|avoids) NODE[=SCORE]", "add ID RESOURCE rule [score=]SCORE ATTR OP VALUE"},
		func(args []string) (string, addFunc, error) {
			l, err := parseLocation(args)
			return "added location " + l.ID, func(ctx context.Context, c *api.Client) (api.WriteResult, error) {
				return c.AddLocation(ctx, l)
			}, err
		})
	colocation := newConstraintKindCmd(g, "colocation", "Keep a resource with (or away from) another",
		[]string{"add ID RESOURCE with WITH [SCORE]"},
		func(args []string) (string, addFunc, error) {
			co, err := parseColocation(args)
			return "added colocation " + co.ID, func(ctx context.Context, c *api.Client) (api.WriteResult, error) {
				return c.AddColocation(ctx, co)
			}, err
		})
	order := newConstraintKindCmd(g, "order", "Start one resource after another",
		[]string{"add ID FIRST then THEN [kind=Optional] [symmetrical=false]"},
		func(args []string) (string, addFunc, error) {
			o, err := parseOrder(args)
			return "added order " + o.ID, func(ctx context.Context, c *api.Client) (api.WriteResult, error) {
				return c.AddOrder(ctx, o)
			}, err
		})
	cmd.AddCommand(location, colocation, order,
		newConstraintRemoveCmd(g, "remove"),
		newConstraintListCmd(g, "list", ""),
	)
	return cmd
}

// addFunc sends a parsed constraint.
type addFunc func(context.Context, *api.Client) (api.WriteResult, error)

// newConstraintKindCmd builds `constraint KIND add|remove|list`. parse
// reads the add command's arguments before any connection is made.
func newConstraintKindCmd(g *globals, kind, short string, uses []string,
	parse func(args []string) (string, addFunc, error)) *cobra.Command {
	cmd := &cobra.Command{Use: kind, Short: short}
	long := "Add a " + kind + " constraint:\n"
	for _, u := range uses {
		long += "  vigil constraint " + kind + " " + u + "\n"
	}
	long += "\nScores are integers or [+-]INFINITY. A negative score can be written bare\n(-INFINITY): flags are not read after the first argument."
	addCmd := &cobra.Command{
		Use:   uses[0],
		Short: "Add a " + kind + " constraint",
		Long:  long,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what, add, err := parse(args)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := add(ctx, c)
				if err != nil {
					return err
				}
				writeResult(g.stdout, what, res)
				return nil
			})
		},
	}
	// Negative scores ("-INFINITY") must not be read as flags: stop flag
	// parsing at the first argument.
	addCmd.Flags().SetInterspersed(false)
	cmd.AddCommand(addCmd, newConstraintRemoveCmd(g, "remove"), newConstraintListCmd(g, "list", kind))
	return cmd
}

func newConstraintRemoveCmd(g *globals, verb string) *cobra.Command {
	return &cobra.Command{
		Use:     verb + " ID",
		Aliases: []string{"delete"},
		Short:   "Remove a constraint (of any kind) by id",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				res, err := c.RemoveConstraint(ctx, args[0])
				if err != nil {
					return err
				}
				writeResult(g.stdout, "removed constraint "+args[0], res)
				return nil
			})
		},
	}
}

func newConstraintListCmd(g *globals, verb, kind string) *cobra.Command {
	return &cobra.Command{
		Use:   verb,
		Short: "List constraints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *api.Client) error {
				cs, err := c.Constraints(ctx)
				if err != nil {
					return err
				}
				switch kind {
				case "location":
					cs.Colocations, cs.Orders = nil, nil
				case "colocation":
					cs.Locations, cs.Orders = nil, nil
				case "order":
					cs.Locations, cs.Colocations = nil, nil
				}
				return g.print(cs, func(w io.Writer) {
					if len(cs.Locations)+len(cs.Colocations)+len(cs.Orders) == 0 {
						fmt.Fprintln(w, "no constraints")
						return
					}
					writeConstraints(w, cs, "")
				})
			})
		},
	}
}

// writeConstraints prints constraints one per line, pcs style.
func writeConstraints(w io.Writer, cs api.Constraints, indent string) {
	for _, l := range cs.Locations {
		if l.Rule != nil {
			var es []string
			for _, e := range l.Rule.Expressions {
				switch e.Op {
				case "defined", "not_defined":
					es = append(es, e.Op+" "+e.Attribute)
				default:
					es = append(es, e.Attribute+" "+e.Op+" "+e.Value)
				}
			}
			join := " and "
			if l.Rule.Or {
				join = " or "
			}
			fmt.Fprintf(w, "%slocation %s: %s on nodes where %s (score %s)\n", indent, l.ID, l.Resource, strings.Join(es, join), l.Score)
			continue
		}
		verb := "prefers"
		if strings.HasPrefix(l.Score, "-") {
			verb = "avoids"
		}
		fmt.Fprintf(w, "%slocation %s: %s %s %s (score %s)\n", indent, l.ID, l.Resource, verb, l.Node, l.Score)
	}
	for _, co := range cs.Colocations {
		rel := "with"
		if strings.HasPrefix(co.Score, "-") {
			rel = "apart from"
		}
		fmt.Fprintf(w, "%scolocation %s: %s %s %s (score %s)\n", indent, co.ID, co.Resource, rel, co.With, co.Score)
	}
	for _, o := range cs.Orders {
		extra := o.Kind
		if o.Symmetrical != nil && !*o.Symmetrical {
			extra += ", not symmetrical"
		}
		fmt.Fprintf(w, "%sorder %s: start %s then %s (%s)\n", indent, o.ID, o.First, o.Then, extra)
	}
}
