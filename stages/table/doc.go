// Package table holds the stages that treat a stream of JSON object
// records as a table, as Miller's verbs and SQL do: aggregate (group by
// fields and compute counts, sums and the like), sort (an external merge
// sort, bounded by max_memory) and lookup (a join against a reference
// file). Each registers itself in init; package stages/all imports this
// one for the default binary.
//
// It is not for per-record transforms of JSON (jq, map, pick live with the
// JSON stages) and knows nothing of the runner: the stages that hold
// records across calls (aggregate, sort) do so through the stages.Holder
// and stages.Drainer contracts.
package table
