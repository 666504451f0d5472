"""geo-train runtime: CoCoDC on torchft's DiLoCo (Streaming DiLoCo), one process per region over gloo."""
