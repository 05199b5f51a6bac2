"""The app's endpoints as MCP tools (`python app.py --mcp`), driven by an MCP client: the four tools
with a description for every parameter, and an inversion through the `invert` tool (the image sent
as a data URI: gradio refuses to fetch URLs of private hosts)."""

import asyncio
import base64

from conftest import ROOT, serve_app


def test_the_endpoints_are_mcp_tools_an_mcp_client_can_call():
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    gen = serve_app("tiny-sd", mcp=True)
    engine, url = next(gen)
    scene = "data:image/png;base64," + base64.b64encode((ROOT / "assets" / "shapes" / "examples" / "scene0.png").read_bytes()).decode()

    async def session():
        async with streamablehttp_client(f"{url}/gradio_api/mcp/") as (read, write, _), ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name: t for t in (await s.list_tools()).tools}
            result = await s.call_tool("invert", {"image": scene, "source_prompt": "a red circle on a blue background", "inverter": "ddim", "steps": 3})
            return tools, result

    try:
        tools, result = asyncio.run(session())
    finally:
        gen.close()
    assert {"invert", "edit", "compare", "interpolate"} <= set(tools)
    for name in ("invert", "edit", "compare", "interpolate"):
        props = tools[name].inputSchema["properties"]
        assert all(p.get("description") for p in props.values()), (name, [k for k, p in props.items() if not p.get("description")])
    assert not result.isError, result.content
    text = " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")  # the outputs, as gradio's MCP server writes them
    assert "reconstruction.png" in text and "'inverter': 'ddim'" in text and "'nfe': 3" in text, text[:500]
