"""README tables and metafiles are what the complexity tool measures now (regenerate them with
tools/analysis/complexity.py when a model changes)."""
import os.path as osp
import re

import pytest
import yaml

from conftest import ROOT, complexity
from pyconv_mm.analysis.report import format_markdown, read_block
from pyconv_mm.benchmark.runner import README_BLOCKS  # checked in test_benchmark_tool.py

README = open(osp.join(ROOT, 'README.md')).read()
BLOCKS = re.findall(r'<!-- BEGIN generated: (\S+) -->', README)


def measured(config_rel: str) -> dict:
    info = dict(complexity(osp.join(ROOT, config_rel)))
    info['config'] = config_rel
    return info


@pytest.mark.parametrize('block', [b for b in BLOCKS if b not in README_BLOCKS])
def test_readme_complexity_block_is_current(block):
    text = read_block(README, block)
    configs = re.findall(r'\]\((configs/[^)]+\.py)\)', text)
    assert configs, f'block {block} lists no configs'
    assert text == format_markdown([measured(c) for c in configs]), (
        f'README block {block!r} is stale: rerun tools/analysis/complexity.py '
        f'{" ".join(configs)} --readme-block {block}')


def metafiles():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        return yaml.safe_load(f)['Import']


@pytest.mark.parametrize('path', metafiles())
def test_metafile_numbers_are_measured(path):
    with open(osp.join(ROOT, path)) as f:
        meta = yaml.safe_load(f)
    collections = {c['Name'] for c in meta['Collections']}
    for model in meta['Models']:
        assert model['In Collection'] in collections
        assert osp.isfile(osp.join(ROOT, model['Config']))
        assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
        info = measured(model['Config'])
        assert model['Metadata']['Parameters'] == info['params'], model['Name']
        assert model['Metadata']['FLOPs'] == int(info['flops']), model['Name']
