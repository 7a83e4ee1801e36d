"""The documented result keys, spelt out once for every test that checks the public contract (users'
dashboards parse them: a test must fail if the engine renames one)."""

RESOURCE_KEYS = [
    "Peak GPU Memory",
    "Peak GPU Utilization",
    "Peak RAM Memory",
    "Peak CPU Utilization",
    "Batch Time",
    "RAM before training",
    "VRAM before training",
]

ENERGY_KEYS = [
    "GPU Energy per Step",
    "CPU Energy per Step",
    "Energy per Training",
    "Average GPU Power",
    "Average CPU Power",
    "Included",
    "Methods",
    "Reasons",
]
COST_KEYS = [
    "Cost per Training",
    "Currency",
    "Price per Device-Hour",
    "Price per kWh",
    "Included",
    "Excluded",
    "Reasons",
]
