"""The prediction rows downstream of evaluation: one reader (`read`) and one scoring rule
(`scoring`), used by the console table, summary.json, the report and the trend alike.
The rows' schema and column lists are `segray.schema`."""
