"""Tables of measured complexity beside the paper's numbers: plain text and markdown, and the
update of a generated block of the README.
"""
import re
from typing import Iterable, List

BEGIN = '<!-- BEGIN generated: {name} -->'
END = '<!-- END generated: {name} -->'


def _delta(ours: float, paper: float) -> str:
    return f'{100 * (ours - paper) / paper:+.1f}%'


def rows(results: Iterable[dict]) -> List[List[str]]:
    """One row per analysed config: name, params, paper params, delta, GFLOPs, paper, delta."""
    table = []
    for info in results:
        paper = info.get('paper') or {}
        params_m = info['params'] / 1e6
        row = [info['name'], f'{params_m:.2f}M']
        if paper.get('exact_params'):
            exact = paper['exact_params']
            row += [f'{exact / 1e6:.2f}M', 'exact' if info['params'] == exact else
                    _delta(info['params'], exact)]
        elif paper.get('params'):
            row += [f'{paper["params"]:.2f}M', _delta(params_m, paper['params'])]
        else:
            row += ['-', '-']
        row.append(f'{info["gflops"]:.2f}')
        if paper.get('gflops'):
            row += [f'{paper["gflops"]:.2f}', _delta(info['gflops'], paper['gflops'])]
        else:
            row += ['-', '-']
        row.append('x'.join(map(str, info['shape'][1:])))
        table.append(row)
    return table


HEADER = ['config', 'params', 'paper', 'diff', 'GFLOPs', 'paper', 'diff', 'input']


def format_text(results: Iterable[dict]) -> str:
    table = [HEADER] + rows(results)
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in table)


def format_markdown(results: Iterable[dict], link_prefix: str = '') -> str:
    results = list(results)
    lines = ['| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
    for info, row in zip(results, rows(results)):
        row[0] = f'[{row[0]}]({link_prefix}{info["config"]})'
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def replace_block(text: str, name: str, content: str) -> str:
    """Replace the generated block ``name`` of a README text (the markers must exist)."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f'the README has no block {begin} ... {end}')
    return pattern.sub(lambda _: f'{begin}\n{content}\n{end}', text)


def read_block(text: str, name: str) -> str:
    begin, end = BEGIN.format(name=name), END.format(name=name)
    match = re.search(re.escape(begin) + '\n(.*?)\n' + re.escape(end), text, re.S)
    if match is None:
        raise ValueError(f'the README has no block {begin} ... {end}')
    return match.group(1)
