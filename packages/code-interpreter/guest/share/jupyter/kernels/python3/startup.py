# Runs once in every python kernel (IPKernelApp.exec_files). It registers the result formatters
# by type *name*, so pandas and matplotlib are imported only by the user, never here (memory).
def __cove_startup():
    import json
    import os

    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    shell = get_ipython()  # noqa: F821 (IPython's builtin)
    display = shell.display_formatter

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict, list)

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        # Not for_type_by_name: importing pyplot runs select_figure_formats, which pops Figure
        # from every formatter. Matching the class by name imports nothing either.
        def __call__(self, obj):
            cls = type(obj)
            if self.enabled and cls.__name__ == "Figure" and cls.__module__ == "matplotlib.figure":
                try:
                    return figure(obj)
                except Exception:
                    return {}
            return super().__call__(obj)

    for cls in (DataFormatter, ChartFormatter):
        formatter = cls(parent=display)
        display.formatters[formatter.format_type] = formatter

    def dataframe(df):
        parsed = json.loads(df.to_json(orient="split", date_format="iso", default_handler=str))
        return {str(c): [row[i] for row in parsed["data"]] for i, c in enumerate(parsed["columns"])}

    charts = {}

    def figure(fig):
        if "mod" not in charts:
            import importlib.util

            path = os.path.join(os.environ.get("COVE_CI_GUEST", "/opt/cove/code-interpreter"), "python", "cove_charts.py")
            spec = importlib.util.spec_from_file_location("cove_charts", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            charts["mod"] = mod
        return charts["mod"].figure_chart(fig)

    def as_json(obj):
        try:
            json.dumps(obj, allow_nan=False)
        except (TypeError, ValueError):
            return None
        return obj

    display.formatters["e2b/data"].for_type_by_name("pandas.core.frame", "DataFrame", dataframe)
    display.formatters["application/json"].for_type(list, as_json)
    display.formatters["application/json"].for_type(dict, as_json)

    # PIL: show() and save("<path>") display the image inline (upstream's 0003_images.py), patched
    # when the user first imports PIL.Image rather than by importing PIL here.
    import importlib.abc
    import importlib.util
    import sys

    def patch_pil(image_module):
        from IPython.display import display

        original_save = image_module.Image.save

        def show(self, *args, **kwargs):
            display(self)

        def save(self, fp, *args, **kwargs):
            result = original_save(self, fp, *args, **kwargs)
            # Not when a library saves through PIL (matplotlib's savefig does): only user code.
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if isinstance(fp, (str, os.PathLike)) and not caller.startswith(("matplotlib", "PIL", "seaborn")):
                display(self)
            return result

        image_module.Image.show = show
        image_module.Image.save = save

    class PilHook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "PIL.Image":
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            exec_module = loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
                patch_pil(module)

            loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, PilHook())


__cove_startup()
del __cove_startup
