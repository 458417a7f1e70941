from configparser import ConfigParser
from pathlib import Path
import setuptools, shlex, shutil
from setuptools.command.build_py import build_py

# note: all settings are in settings.ini; edit there, not here
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o:cfg[o] for o in cfg_keys}

# SPDX license expressions (the License classifiers are deprecated in favour of them)
licenses = {'apache2': 'Apache-2.0'}
statuses = [ '1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive' ]
py_versions = '3.11 3.12 3.13'.split()

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
lab_requirements = shlex.split(cfg.get('lab_requirements', ''))

class build_py_with_study(build_py):
    "Ship the study notebooks and study files (nbs/study/*.ipynb and *.toml, their one source) as package data lasr/study/."
    def run(self):
        super().run()
        study = Path('nbs') / 'study'
        # `lasr reproduce` of an installed wheel needs them: never build a package without them
        if not study.is_dir(): raise FileNotFoundError(f"{study} is missing: build from a lasr checkout or sdist")
        dest = Path(self.build_lib) / cfg['lib_path'] / 'study'
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted([*study.glob('*.ipynb'), *study.glob('*.toml')]): shutil.copyfile(f, dest / f.name)
min_python = cfg['min_python']
lic = licenses.get(cfg['license'].lower(), cfg['license'])

setuptools.setup(
    name = cfg['lib_name'],
    license = lic,
    license_files = ['LICENSE'],
    classifiers = [
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: '+o for o in py_versions[py_versions.index(min_python):]],
    url = cfg['git_url'],
    packages = setuptools.find_packages(include=['lasr', 'lasr.*']),
    include_package_data = True,
    install_requires = requirements,
    extras_require={ 'dev': dev_requirements, 'lab': lab_requirements },
    cmdclass = {'build_py': build_py_with_study},
    dependency_links = cfg.get('dep_links','').split(),
    python_requires  = '>=' + cfg['min_python'],
    long_description = open('README.md', encoding='utf-8').read(),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': cfg.get('console_scripts','').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']
    },
    **setup_cfg)
